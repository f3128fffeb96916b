// The serve loop shared by the transports whose queue fd speaks copy's format (copy, pipe,
// splice): read() a batch of requests, answer them, write() the completions in as few calls as
// the completion buffer allows. QueueLoop owns the loop, the completion batch and the one walk
// over a batch (serve_batch()); CopyQueue (copy.h) answers entries that carry data inline,
// DescQueue (here) bare descriptors, whose data the transport moves elsewhere (a pipe per tag,
// a data fd).
#pragma once

#include <cerrno>
#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <vector>

#include "codec.h"
#include "core/fault.h"
#include "transports/kmod/kmod.h"
#include "core/mapping.h"

namespace userblk::copy {

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

/// A queue's request and completion buffers, allocated before its worker is built.
struct QueueBuffers {
    Mapping requests;
    Mapping completions;
    /// Two buffers of size bytes each for queue q; name prefixes the error message.
    static Result<QueueBuffers> allocate(const KmodQueue& q, std::size_t size,
                                         const std::string& name);
};

class QueueLoop : public KmodQueueWorker {
public:
    /// read() a batch, handle_batch(), until end of file, ENODEV, or an error.
    Status run(std::stop_token stop) override;

    /// Answers every request of one batch (as read() returned it) and writes the completions to
    /// sink. Allocates nothing.
    virtual BatchResult handle_batch(std::span<std::byte> batch, CompletionSink& sink) noexcept = 0;

    /// The buffer read() fills.
    [[nodiscard]] std::span<std::byte> request_buffer() const noexcept { return requests_.bytes(); }

protected:
    /// name prefixes messages ("copy: queue 0: ..."); fault is the device's fault mode (none
    /// unless `userblk add --fault`).
    QueueLoop(KmodQueue& q, std::string name, QueueBuffers buffers, const FaultConfig& fault);

    /// Sends the completions gathered in batch_ and counts them.
    BatchResult flush(CompletionSink& sink) noexcept;
    /// Counts one received batch of count requests (if any) and flushes.
    BatchResult end_batch(std::uint64_t count, CompletionSink& sink) noexcept;
    /// Logs a problem of this queue, capped so a broken kernel cannot flood the log.
    void note(const char* what, int err, std::uint16_t tag) noexcept;

    /// Adds a completion without data, flushing first if the batch is full.
    void put(const userblk_io_desc& d, std::int32_t res, CompletionSink& sink) noexcept;

    /// What the fault mode's seam (core/fault.h) of every queue of this format shares:
    /// completions join the batch and leave through the batch's sink. Each queue's Seam derives
    /// from it and adds answer() (and fail() where it must).
    class BatchSeam : public FaultSeam {
    public:
        BatchSeam(QueueLoop& q, CompletionSink& sink) noexcept : loop_(q), sink_(sink) {}

        [[nodiscard]] std::uint32_t depth() const noexcept final {
            return loop_.q_.device.queue_depth;
        }
        bool send(const userblk_io_desc& d, std::int32_t res) noexcept final {
            loop_.put(d, res, sink_);
            return true;
        }
        bool flush() noexcept final {
            result = loop_.flush(sink_);
            return result.status == BatchStatus::served;
        }

        BatchResult result; ///< why the queue cannot go on, when a method said so

    protected:
        ~BatchSeam() = default;
        CompletionSink& sink() noexcept { return sink_; }

    private:
        QueueLoop& loop_;
        CompletionSink& sink_;
    };

    /// The walk over one batch, written once for every queue of this format: parse each entry,
    /// count it, make room for its completion, answer it (or hand it to the fault mode through
    /// seam), and flush at the end. A malformed entry is answered -EIO and counted. Queue
    /// supplies, with no virtual call per request: completion_data(req), the bytes of data the
    /// completion of a well-formed request carries; answer(req), which serves it and adds its
    /// completion; and a Seam (a FaultSeam) with serving(req), told each request the fault mode
    /// is about to be given. inline_data: WRITE entries carry their data (copy).
    template <class Queue, class Seam>
    BatchResult serve_batch(Queue& self, std::span<std::byte> batch, bool inline_data, Seam& seam,
                            CompletionSink& sink) noexcept;

    KmodQueue& q_;
    CompletionBatch batch_;
    FaultInjector fault_;

private:
    std::string name_;
    Mapping requests_;
    Mapping completions_;
    std::vector<std::uint32_t> entry_sizes_;
    std::uint32_t notes_ = 0;
};

/// The request and completion buffers of a descriptor-only queue (depth entries, page rounded).
std::size_t desc_buffer_size(std::uint32_t queue_depth) noexcept;

/// The loop of the transports whose read() returns bare descriptors (pipe, splice).
class DescQueue : public QueueLoop {
public:
    BatchResult handle_batch(std::span<std::byte> batch, CompletionSink& sink) noexcept override;

protected:
    /// buffers of desc_buffer_size(depth) each.
    DescQueue(KmodQueue& q, std::string name, QueueBuffers buffers, const FaultConfig& fault = {})
        : QueueLoop(q, std::move(name), std::move(buffers), fault) {}

    /// Runs one well-formed request, moving its data; returns its result (0 or -errno).
    virtual int serve(const userblk_io_desc& desc) noexcept = 0;
    /// The short fault: runs a READ but hands the kernel fewer bytes than len, and returns 0 as
    /// if all were there. Required for a transport that lists short in faults=.
    virtual int serve_short(const userblk_io_desc& desc) noexcept { return serve(desc); }
    /// Throws away the data a READ answered with an error left behind (a pipe's). Optional.
    virtual void discard(const userblk_io_desc& /*desc*/) noexcept {}

private:
    friend class QueueLoop;
    class Seam;

    static std::uint32_t completion_data(const Request& /*req*/) noexcept { return 0; }
    void answer(const Request& req) noexcept;
};

template <class Queue, class Seam>
BatchResult QueueLoop::serve_batch(Queue& self, std::span<std::byte> batch, bool inline_data,
                                   Seam& seam, CompletionSink& sink) noexcept {
    QueueStats& s = q_.stats;
    RequestParser parser(batch, q_.device.max_io_bytes, inline_data);
    Request req;
    std::uint64_t count = 0;
    if (fault_.armed() && !fault_.begin_batch(seam)) [[unlikely]] {
        return seam.result;
    }
    for (ParseStatus ps = parser.next(req); ps != ParseStatus::end; ps = parser.next(req)) {
        if (ps == ParseStatus::truncated) {
            s.protocol_errors.add();
            note("malformed batch: bytes left that are not an entry", EPROTO, 0);
            continue;
        }
        ++count;
        // Room for the completion; only a READ's inline data, or a kernel that sent more entries
        // than tags, fills the batch.
        if (!batch_.fits(ps == ParseStatus::request ? self.completion_data(req) : 0)) {
            if (BatchResult r = flush(sink); r.status != BatchStatus::served) {
                return r;
            }
        }
        if (ps == ParseStatus::invalid) {
            s.protocol_errors.add();
            s.count_request(req.desc.op, req.desc.len);
            s.io_errors.add();
            note("malformed request: length past max_io_bytes or the batch", EPROTO, req.desc.tag);
            if (!batch_.add(req.desc, -EIO)) {
                s.protocol_errors.add();
            }
            continue;
        }
        if (fault_.armed()) [[unlikely]] {
            seam.serving(req);
            if (!fault_.complete(req.desc, seam)) {
                return seam.result;
            }
            continue;
        }
        self.answer(req);
    }
    return end_batch(count, sink);
}

} // namespace userblk::copy
