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

/// Completions go to the queue fd.
class FdSink final : public copy::CompletionSink {
public:
    explicit FdSink(int fd) : fd_(fd) {}
    ssize_t write(std::span<const std::byte> bytes) noexcept override {
        ssize_t n = ::write(fd_, bytes.data(), bytes.size());
        return n < 0 ? -errno : n;
    }

private:
    int fd_;
};

constexpr std::uint32_t kMaxNotes = 16;

} // namespace

std::unique_ptr<Transport> make_copy_transport() {
    return std::make_unique<CopyTransport>();
}

namespace copy {

Result<std::unique_ptr<CopyQueue>> CopyQueue::create(KmodQueue& q) {
    std::size_t size = queue_buffer_size(q.device.max_io_bytes, q.device.queue_depth);
    std::string what = "copy: queue " + std::to_string(q.id);
    auto requests = Mapping::anonymous(size, false, what + " request buffer");
    if (!requests.ok()) {
        return requests.status();
    }
    auto completions = Mapping::anonymous(size, false, what + " completion buffer");
    if (!completions.ok()) {
        return completions.status();
    }
    return std::unique_ptr<CopyQueue>(
        new CopyQueue(q, std::move(requests).value(), std::move(completions).value()));
}

CopyQueue::CopyQueue(KmodQueue& q, Mapping requests, Mapping completions)
    : q_(q), requests_(std::move(requests)), completions_(std::move(completions)),
      // Every tag is answered at most once per batch: depth entries (at least one).
      entry_sizes_(std::max<std::uint32_t>(q.device.queue_depth, 1)),
      batch_(completions_.bytes(), entry_sizes_) {}

void CopyQueue::note(const char* what, int err, std::uint16_t tag) noexcept {
    if (notes_ >= kMaxNotes) {
        return;
    }
    ++notes_;
    const char* text = ::strerrordesc_np(err); // no allocation, unlike strerror's friends
    log_error("copy: queue %u: %s (tag %u): %s%s", q_.id, what, static_cast<unsigned>(tag),
              text != nullptr ? text : "unknown error",
              notes_ == kMaxNotes ? "; further problems on this queue are only counted" : "");
}

BatchResult CopyQueue::flush(CompletionSink& sink) noexcept {
    if (batch_.entries() == 0) {
        return {};
    }
    QueueStats& s = q_.stats;
    SendResult sr = send_completions(batch_, sink);
    s.write_calls.add(sr.write_calls);
    QueueStats::count_batch(s.completion_batches, batch_.entries());
    batch_.clear();
    if (sr.rejected > 0) {
        s.rejected_completions.add(sr.rejected);
        note("completion refused", sr.first_error, sr.first_tag);
    }
    switch (sr.status) {
    case SendStatus::sent:
        return {};
    case SendStatus::device_gone:
        return {BatchStatus::device_gone, ENODEV};
    case SendStatus::failed:
        break;
    }
    s.protocol_errors.add();
    return {BatchStatus::failed, sr.first_error};
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
    if (count > 0) {
        QueueStats::count_batch(s.request_batches, count);
    }
    return flush(sink);
}

Status CopyQueue::run(std::stop_token stop) {
    FdSink sink(q_.fd);
    std::span<std::byte> buf = requests_.bytes();
    QueueStats& s = q_.stats;
    while (true) {
        ssize_t n = ::read(q_.fd, buf.data(), buf.size());
        s.read_calls.add();
        if (n == 0) {
            return {}; // the device was stopped or deleted: no request will come
        }
        if (n < 0) {
            int err = errno;
            if (err == EINTR && !stop.stop_requested()) {
                continue;
            }
            if (err == EINTR || err == ENODEV) {
                return {};
            }
            if (err == EAGAIN) { // a non-blocking queue fd: wait for requests
                pollfd p{q_.fd, POLLIN, 0};
                s.wait_calls.add();
                if (::poll(&p, 1, -1) < 0 && errno != EINTR) {
                    return Status::from_errno(errno, "copy: poll on queue " +
                                                         std::to_string(q_.id) + " failed");
                }
                continue;
            }
            return Status::from_errno(err,
                                      "copy: read on queue " + std::to_string(q_.id) + " failed");
        }
        BatchResult r = handle_batch(buf.first(static_cast<std::size_t>(n)), sink);
        if (r.status == BatchStatus::device_gone) {
            return {};
        }
        if (r.status == BatchStatus::failed) {
            return Status::from_errno(
                r.error, "copy: write of completions on queue " + std::to_string(q_.id) + " failed",
                "the kernel applied part of an entry");
        }
    }
}

} // namespace copy
} // namespace userblk
