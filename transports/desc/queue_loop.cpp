#include "queue_loop.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <poll.h>
#include <unistd.h>

#include "core/log.h"

namespace userblk::copy {

namespace {

constexpr std::uint32_t kMaxNotes = 16;

/// Completions go to the queue fd.
class FdSink final : public CompletionSink {
public:
    explicit FdSink(int fd) : fd_(fd) {}
    ssize_t write(std::span<const std::byte> bytes) noexcept override {
        ssize_t n = ::write(fd_, bytes.data(), bytes.size());
        return n < 0 ? -errno : n;
    }

private:
    int fd_;
};

} // namespace

Result<QueueBuffers> QueueBuffers::allocate(const KmodQueue& q, std::size_t size,
                                            const std::string& name) {
    std::string what = name + ": queue " + std::to_string(q.id);
    auto requests = Mapping::anonymous(size, false, what + " request buffer");
    if (!requests.ok()) {
        return requests.status();
    }
    auto completions = Mapping::anonymous(size, false, what + " completion buffer");
    if (!completions.ok()) {
        return completions.status();
    }
    return QueueBuffers{std::move(requests).value(), std::move(completions).value()};
}

QueueLoop::QueueLoop(KmodQueue& q, std::string name, QueueBuffers buffers, const FaultConfig& fault)
    : q_(q), batch_({}, {}), fault_(fault, name, q.id, q.device.timeout_ms), name_(std::move(name)),
      requests_(std::move(buffers.requests)), completions_(std::move(buffers.completions)),
      // Every tag is answered at most once per batch: depth entries (at least one).
      entry_sizes_(std::max<std::uint32_t>(q.device.queue_depth, 1)) {
    batch_ = CompletionBatch(completions_.bytes(), entry_sizes_);
}

void QueueLoop::note(const char* what, int err, std::uint16_t tag) noexcept {
    if (notes_ >= kMaxNotes) {
        return;
    }
    ++notes_;
    const char* text = ::strerrordesc_np(err); // no allocation, unlike strerror's friends
    log_error("%s: queue %u: %s (tag %u): %s%s", name_.c_str(), q_.id, what,
              static_cast<unsigned>(tag), text != nullptr ? text : "unknown error",
              notes_ == kMaxNotes ? "; further problems on this queue are only counted" : "");
}

void QueueLoop::put(const userblk_io_desc& d, std::int32_t res, CompletionSink& sink) noexcept {
    if (!batch_.fits(0)) {
        (void)flush(sink); // a dead device shows again at the batch's own flush
    }
    if (!batch_.add(d, res)) {
        q_.stats.protocol_errors.add();
    }
}

BatchResult QueueLoop::flush(CompletionSink& sink) noexcept {
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

BatchResult QueueLoop::end_batch(std::uint64_t count, CompletionSink& sink) noexcept {
    if (count > 0) {
        QueueStats::count_batch(q_.stats.request_batches, count);
    }
    return flush(sink);
}

Status QueueLoop::run(std::stop_token stop) {
    FdSink sink(q_.fd);
    std::span<std::byte> buf = requests_.bytes();
    QueueStats& s = q_.stats;
    const std::string where = name_ + ": queue " + std::to_string(q_.id);
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
                    return Status::from_errno(errno, where + ": poll failed");
                }
                continue;
            }
            return Status::from_errno(err, where + ": read failed");
        }
        BatchResult r = handle_batch(buf.first(static_cast<std::size_t>(n)), sink);
        if (r.status == BatchStatus::device_gone) {
            return {};
        }
        if (r.status == BatchStatus::failed) {
            return Status::from_errno(r.error, where + ": write of completions failed",
                                      "the kernel applied part of an entry");
        }
    }
}

std::size_t desc_buffer_size(std::uint32_t queue_depth) noexcept {
    static const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::size_t bytes = std::size_t{std::max<std::uint32_t>(queue_depth, 1)} *
                        std::max(sizeof(userblk_io_desc), sizeof(userblk_io_cpl));
    return (bytes + page - 1) / page * page;
}

/// The fault mode's way into a descriptor queue.
class DescQueue::Seam final : public BatchSeam {
public:
    Seam(DescQueue& q, CompletionSink& sink) noexcept : BatchSeam(q, sink), q_(q) {}

    /// A descriptor carries no data for answer() to keep.
    void serving(const Request& /*req*/) noexcept {}

    std::optional<std::int32_t> answer(const userblk_io_desc& d, bool short_read) noexcept override {
        const int res = short_read ? q_.serve_short(d) : q_.serve(d);
        q_.put(d, res, sink());
        return res;
    }
    bool fail(const userblk_io_desc& d, std::int32_t res) noexcept override {
        // Run, so that a WRITE's data leaves its channel; a READ's data is thrown away, since the
        // kernel takes none of it with an error.
        if (q_.serve(d) == 0 && d.op == USERBLK_OP_READ) {
            q_.discard(d);
        }
        q_.put(d, res, sink());
        return true;
    }

private:
    DescQueue& q_;
};

void DescQueue::answer(const Request& req) noexcept {
    if (!batch_.add(req.desc, serve(req.desc))) {
        q_.stats.protocol_errors.add();
    }
}

BatchResult DescQueue::handle_batch(std::span<std::byte> batch, CompletionSink& sink) noexcept {
    Seam seam(*this, sink);
    return serve_batch(*this, batch, false, seam, sink);
}

} // namespace userblk::copy
