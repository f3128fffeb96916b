// The copy transport (USERBLK_MODE_COPY): read() on the queue fd returns a batch of requests
// (a WRITE's data inline), write() returns a batch of completions (a READ's data inline). The
// kernel copies the data in the same syscalls: two syscalls per batch, no other wake-up.
#pragma once

#include <memory>
#include <span>

#include "transports/desc/queue_loop.h"

namespace userblk {

/// Its registry entry.
extern const TransportEntry transport_entry_copy;

namespace copy {

/// The serve loop of one copy queue: a WRITE's data comes inline in the read() batch, a READ's
/// data goes inline in the write() of completions. Buffers allocated once; nothing per request.
class CopyQueue final : public QueueLoop {
public:
    /// Allocates the buffers for q (queue_buffer_size() each); fault is the fault mode.
    static Result<std::unique_ptr<CopyQueue>> create(KmodQueue& q, const FaultConfig& fault = {});

    /// Runs every request of one batch on the backend and writes the completions to sink, in as
    /// few write() calls as the completion buffer allows.
    BatchResult handle_batch(std::span<std::byte> batch, CompletionSink& sink) noexcept override;

private:
    friend class QueueLoop;
    class Seam;

    CopyQueue(KmodQueue& q, QueueBuffers buffers, const FaultConfig& fault)
        : QueueLoop(q, "copy", std::move(buffers), fault) {}

    /// A READ's data goes inline in its completion.
    static std::uint32_t completion_data(const Request& req) noexcept {
        return req.desc.op == USERBLK_OP_READ ? req.desc.len : 0;
    }
    void answer(const Request& req) noexcept;
};

} // namespace copy
} // namespace userblk
