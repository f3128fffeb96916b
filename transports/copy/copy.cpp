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
        caps.set_flag("batching", true);
        caps.set_flag("zero_copy", false);
        caps.set_flag("polling", false);
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

BatchResult CopyQueue::handle_batch(std::span<std::byte> batch, CompletionSink& sink) noexcept {
    QueueStats& s = q_.stats;
    RequestParser parser(batch, q_.device.max_io_bytes);
    Request req;
    std::uint64_t count = 0;
    BatchResult result;
    if (fault_.armed()) [[unlikely]] {
        fault_pending(sink);
    }
    for (ParseStatus ps = parser.next(req); ps != ParseStatus::end; ps = parser.next(req)) {
        if (ps == ParseStatus::truncated) {
            s.protocol_errors.add();
            note("malformed batch: bytes left that are not an entry", EPROTO, 0);
            continue;
        }
        ++count;
        const bool with_data = ps == ParseStatus::request && req.desc.op == USERBLK_OP_READ;
        const std::uint32_t data_len = with_data ? req.desc.len : 0;
        if (!batch_.fits(data_len)) {
            result = flush(sink);
            if (result.status != BatchStatus::served) {
                return result;
            }
        }
        if (ps == ParseStatus::invalid) {
            s.protocol_errors.add();
            s.count_request(req.desc.op, req.desc.len);
            s.io_errors.add();
            note("malformed request: length past max_io_bytes or the batch", EPROTO, req.desc.tag);
            batch_.add(req.desc, -EIO);
            continue;
        }
        if (fault_.armed()) [[unlikely]] {
            result = serve_faulty(req, with_data, sink);
            if (result.status != BatchStatus::served) {
                return result;
            }
            continue;
        }
        if (with_data) {
            if (auto dst = batch_.reserve_data(req.desc, data_len)) {
                int res = execute(q_.backend, q_.backend_queue, req.desc, *dst);
                batch_.commit_data(res);
                if (res == 0) {
                    s.user_data_bytes.add(data_len); // sent back by the write() of this batch
                }
                continue;
            }
        }
        s.user_data_bytes.add(req.data.size()); // a WRITE's data came in with the read()
        // After a flush an entry always fits (the buffer holds a max_io_bytes READ).
        int res = with_data ? -EIO : execute(q_.backend, q_.backend_queue, req.desc, req.data);
        if (!batch_.add(req.desc, res)) {
            s.protocol_errors.add();
        }
    }
    return end_batch(count, sink);
}

BatchResult CopyQueue::serve_faulty(const Request& req, bool with_data,
                                    CompletionSink& sink) noexcept {
    QueueStats& s = q_.stats;
    const userblk_io_desc& d = req.desc;
    std::optional<FaultKind> f = fault_.pick(d.tag);
    FaultPlan plan;
    if (f) {
        plan = fault_prefix(*f, d, sink);
        if (plan.drop_it) {
            return {};
        }
    }
    if (plan.result) { // fails with an odd errno, unrun
        put(d, *plan.result, sink);
        return {};
    }
    int res = 0;
    if (with_data) {
        const bool cut = f == FaultKind::short_len;
        if (cut || !batch_.fits(d.len)) {
            // The short fault needs the READ alone in its write(); otherwise make room.
            if (BatchResult r = flush(sink); r.status != BatchStatus::served) {
                return r;
            }
        }
        auto dst = batch_.reserve_data(d, d.len);
        if (!dst) {
            return {BatchStatus::failed, EPROTO}; // a flushed batch holds a max_io_bytes READ
        }
        res = execute(q_.backend, q_.backend_queue, d, *dst);
        batch_.commit_data(res);
        if (res == 0) {
            s.user_data_bytes.add(d.len);
        }
        if (cut && res == 0) {
            // The entry with half its data, the end of the write() inside it: the kernel must
            // refuse it whole (EINVAL) and still take the right answer that follows.
            std::span<const std::byte> all = batch_.bytes();
            ssize_t n = sink.write(all.first(sizeof(userblk_io_cpl) + d.len / 2));
            s.write_calls.add();
            if (n == -ENODEV) {
                return {BatchStatus::device_gone, ENODEV};
            }
            if (n >= 0) {
                note("the kernel took a READ completion cut short", EPROTO, d.tag);
                s.protocol_errors.add();
            }
            if (BatchResult r = flush(sink); r.status != BatchStatus::served) {
                return r;
            }
        }
    } else {
        s.user_data_bytes.add(req.data.size());
        res = execute(q_.backend, q_.backend_queue, d, req.data);
        put(d, res, sink);
    }
    if (f) {
        fault_suffix(*f, d, res, sink);
    }
    return {};
}

} // namespace copy
} // namespace userblk
