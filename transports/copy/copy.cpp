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
    CopyTransport() : KmodTransport("copy", USERBLK_MODE_COPY) {}

private:
    void describe_mode(Capabilities& caps) const override {
        caps.set("requests", "read() on the queue fd, batched; a WRITE's data inline");
        caps.set("completions", "write() on the queue fd, batched; a READ's data inline");
        caps.set("data_path", "copied by the kernel into and out of the daemon's buffers");
        caps.set_flag("batching", true);
        caps.set_flag("zero_copy", false);
        caps.set_flag("polling", false);
        caps.set_number("syscalls_per_batch", 2);
        caps.set("queue_buffer", "USERBLK_COPY_MIN_READ(max_io_bytes) + depth * " +
                                     std::to_string(sizeof(userblk_io_desc)) +
                                     " bytes, page rounded, twice per queue");
    }

    Result<std::unique_ptr<KmodQueueWorker>> make_worker(KmodQueue& q) override {
        auto worker = copy::CopyQueue::create(q);
        if (!worker.ok()) {
            return worker.status();
        }
        return std::unique_ptr<KmodQueueWorker>(std::move(worker).value());
    }
};

} // namespace

std::unique_ptr<Transport> make_copy_transport() {
    return std::make_unique<CopyTransport>();
}

namespace copy {

Result<std::unique_ptr<CopyQueue>> CopyQueue::create(KmodQueue& q) {
    auto buffers = QueueBuffers::allocate(
        q, queue_buffer_size(q.device.max_io_bytes, q.device.queue_depth), "copy");
    if (!buffers.ok()) {
        return buffers.status();
    }
    return std::unique_ptr<CopyQueue>(new CopyQueue(q, std::move(buffers).value()));
}

BatchResult CopyQueue::handle_batch(std::span<std::byte> batch, CompletionSink& sink) noexcept {
    QueueStats& s = q_.stats;
    RequestParser parser(batch, q_.device.max_io_bytes);
    Request req;
    std::uint64_t count = 0;
    BatchResult result;
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

} // namespace copy
} // namespace userblk
