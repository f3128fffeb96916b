// The copy transport (USERBLK_MODE_COPY): read() on the queue fd returns a batch of requests
// (a WRITE's data inline), write() returns a batch of completions (a READ's data inline). The
// kernel copies the data in the same syscalls: two syscalls per batch, no other wake-up.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stop_token>
#include <vector>

#include "codec.h"
#include "core/kmod.h"
#include "core/mapping.h"

namespace userblk {

/// The registry's factory.
std::unique_ptr<Transport> make_copy_transport();

namespace copy {

/// What one batch came to.
enum class BatchStatus : std::uint8_t {
    served,      ///< every request answered (or dropped as malformed and counted)
    device_gone, ///< the device died while answering: stop serving, successfully
    failed,      ///< the kernel broke the contract; error holds the errno
};

struct BatchResult {
    BatchStatus status = BatchStatus::served;
    int error = 0;
};

/// The serve loop of one queue: its buffers, allocated once; nothing is allocated per request.
class CopyQueue final : public KmodQueueWorker {
public:
    /// Allocates the buffers for q (queue_buffer_size() each).
    static Result<std::unique_ptr<CopyQueue>> create(KmodQueue& q);

    /// read() a batch, handle_batch(), until end of file, ENODEV, or an error.
    Status run(std::stop_token stop) override;

    /// Runs every request of one batch (as read() returned it) on the backend and writes the
    /// completions to sink, in as few write() calls as the completion buffer allows.
    BatchResult handle_batch(std::span<std::byte> batch, CompletionSink& sink) noexcept;

    /// The buffer read() fills.
    [[nodiscard]] std::span<std::byte> request_buffer() const noexcept { return requests_.bytes(); }

private:
    CopyQueue(KmodQueue& q, Mapping requests, Mapping completions);
    BatchResult flush(CompletionSink& sink) noexcept;
    void note(const char* what, int err, std::uint16_t tag) noexcept;

    KmodQueue& q_;
    Mapping requests_;
    Mapping completions_;
    std::vector<std::uint32_t> entry_sizes_;
    CompletionBatch batch_;
    std::uint32_t notes_ = 0; ///< diagnostics printed, capped so a broken kernel cannot flood
};

} // namespace copy
} // namespace userblk
