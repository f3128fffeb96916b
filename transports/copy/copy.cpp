#include "copy.h"

#include <cerrno>
#include <cstring>
#include <string>

#include <poll.h>
#include <unistd.h>

#include "core/io.h"
#include "core/log.h"

namespace userblk {

namespace {

class CopyTransport final : public KmodTransport {
public:
    CopyTransport() : KmodTransport(transport_entry_copy) {}

private:
    void describe_mode(Capabilities& caps) const override {
        caps.set("requests", "read() on the queue fd, batched; a WRITE's data inline");
        caps.set("completions", "write() on the queue fd, batched; a READ's data inline");
        caps.set("data_path", "copied by the kernel into and out of the daemon's buffers");
        // What userblk.ko copies the request data to or from (sysfs userblk/*_copied_*_bytes).
        caps.set("kernel_copy", "user");
        caps.set_flag("batching", true);
        caps.set_flag("zero_copy", false);
        caps.set_flag("polling", false);
        caps.set_flag("lend", false);
        // USERBLK_F_RECOVERY: a new daemon takes over the device (`userblk recover`).
        caps.set_flag("recovery", true);
        caps.set_number("syscalls_per_batch", 2);
        caps.set("faults", format_faults(kDescFaults));
        caps.set("queue_buffer", "USERBLK_COPY_MIN_READ(max_io_bytes) + depth * " +
                                     std::to_string(sizeof(userblk_io_desc)) +
                                     " bytes, page rounded, twice per queue");
    }

    Result<std::unique_ptr<KmodQueueWorker>> make_worker(KmodQueue& q) override {
        auto worker = copy::CopyQueue::create(q, config().fault);
        if (!worker.ok()) {
            return worker.status();
        }
        return std::unique_ptr<KmodQueueWorker>(std::move(worker).value());
    }
};

} // namespace

const TransportEntry transport_entry_copy{
    .name = "copy",
    .kind = TransportKind::userblk,
    .mode = USERBLK_MODE_COPY,
    .summary = "read()/write() on the queue fd; data copied by the kernel in the same syscalls",
    .make = &make_transport<CopyTransport>,
};

namespace copy {

Result<std::unique_ptr<CopyQueue>> CopyQueue::create(KmodQueue& q, const FaultConfig& fault) {
    auto buffers = QueueBuffers::allocate(
        q, queue_buffer_size(q.device.max_io_bytes, q.device.queue_depth), "copy");
    if (!buffers.ok()) {
        return buffers.status();
    }
    return std::unique_ptr<CopyQueue>(new CopyQueue(q, std::move(buffers).value(), fault));
}

/// The fault mode's way into a copy queue: a READ's completion carries its data inline.
class CopyQueue::Seam final : public BatchSeam {
public:
    Seam(CopyQueue& q, CompletionSink& sink) noexcept : BatchSeam(q, sink), q_(q) {}

    /// The request complete() is about to be given (answer() needs its WRITE data).
    void serving(const Request& req) noexcept {
        req_ = &req;
        with_data_ = req.desc.op == USERBLK_OP_READ;
    }

    std::optional<std::int32_t> answer(const userblk_io_desc& d, bool short_read) noexcept override;

private:
    CopyQueue& q_;
    const Request* req_ = nullptr;
    bool with_data_ = false;
};

std::optional<std::int32_t> CopyQueue::Seam::answer(const userblk_io_desc& d,
                                                    bool short_read) noexcept {
    QueueStats& s = q_.q_.stats;
    if (!with_data_) {
        const int res = execute(q_.q_.backend, q_.q_.backend_queue, d, req_->data);
        q_.put(d, res, sink());
        return res;
    }
    if (short_read || !q_.batch_.fits(d.len)) {
        // The short fault needs the READ alone in its write(); otherwise make room.
        if (!flush()) {
            return std::nullopt;
        }
    }
    auto dst = q_.batch_.reserve_data(d, d.len);
    if (!dst) {
        result = {BatchStatus::failed, EPROTO}; // a flushed batch holds a max_io_bytes READ
        return std::nullopt;
    }
    const int res = execute(q_.q_.backend, q_.q_.backend_queue, d, *dst);
    q_.batch_.commit_data(res);
    if (short_read && res == 0) {
        // The entry with half its data, the end of the write() inside it: the kernel must refuse
        // it whole (EINVAL) and still take the right answer that follows.
        std::span<const std::byte> all = q_.batch_.bytes();
        ssize_t n = sink().write(all.first(sizeof(userblk_io_cpl) + d.len / 2));
        s.write_calls.add();
        if (n == -ENODEV) {
            result = {BatchStatus::device_gone, ENODEV};
            return std::nullopt;
        }
        if (n >= 0) {
            q_.note("the kernel took a READ completion cut short", EPROTO, d.tag);
            s.protocol_errors.add();
        }
        if (!flush()) {
            return std::nullopt;
        }
    }
    return res;
}

void CopyQueue::answer(const Request& req) noexcept {
    if (req.desc.op == USERBLK_OP_READ) {
        if (auto dst = batch_.reserve_data(req.desc, req.desc.len)) {
            batch_.commit_data(execute(q_.backend, q_.backend_queue, req.desc, *dst));
            return;
        }
    }
    // After a flush an entry always fits (the buffer holds a max_io_bytes READ).
    const int res = req.desc.op == USERBLK_OP_READ
                        ? -EIO
                        : execute(q_.backend, q_.backend_queue, req.desc, req.data);
    if (!batch_.add(req.desc, res)) {
        q_.stats.protocol_errors.add();
    }
}

BatchResult CopyQueue::handle_batch(std::span<std::byte> batch, CompletionSink& sink) noexcept {
    Seam seam(*this, sink);
    return serve_batch(*this, batch, true, seam, sink);
}

} // namespace copy
} // namespace userblk
