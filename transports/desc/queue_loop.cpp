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

QueueLoop::FaultPlan QueueLoop::fault_prefix(FaultKind f, const userblk_io_desc& d,
                                             CompletionSink& sink) noexcept {
    FaultPlan plan;
    switch (f) {
    case FaultKind::drop:
        plan.drop_it = true;
        break;
    case FaultKind::wrong_tag: {
        // Every variant fails what it might hit (-EIO), so a lie that happened to match an
        // outstanding request could only fail it, never fake its success.
        const std::uint32_t depth = q_.device.queue_depth;
        userblk_io_desc w = d;
        switch (fault_.below(3)) {
        case 0: // beyond the depth
            w.tag = static_cast<std::uint16_t>(depth + fault_.below(0x10000 - depth));
            break;
        case 1: // the same tag, a generation it does not have
            w.gen = d.gen + 1 + fault_.below(1000);
            break;
        default: // another tag, this request's generation
            w.tag = static_cast<std::uint16_t>((d.tag + 1 + fault_.below(depth)) % depth);
            break;
        }
        put(w, -EIO, sink);
        break;
    }
    case FaultKind::bad_result:
        if (fault_.below(2) == 0) {
            put(d, fault_.invalid_result(), sink); // refused; the real answer follows
        } else {
            plan.result = fault_.odd_errno(); // a valid errno the request fails with
        }
        break;
    case FaultKind::stall:
        (void)flush(sink);
        fault_.stall();
        break;
    case FaultKind::exit:
        (void)flush(sink); // half the batch answered, the rest outstanding
        fault_.exit_now();
    case FaultKind::twice:
    case FaultKind::short_len:
    case FaultKind::scribble:
        break;
    }
    return plan;
}

void QueueLoop::fault_suffix(FaultKind f, const userblk_io_desc& d, std::int32_t res,
                             CompletionSink& sink) noexcept {
    if (f != FaultKind::twice) {
        return;
    }
    if (fault_.below(2) == 0) {
        put(d, res, sink); // right after the first, in the same write()
    } else {
        dup_ = d; // at the start of the next batch, when the tag may be in use again
    }
}

void QueueLoop::fault_pending(CompletionSink& sink) noexcept {
    if (dup_) {
        put(*dup_, 0, sink);
        dup_.reset();
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

BatchResult DescQueue::handle_batch(std::span<std::byte> batch, CompletionSink& sink) noexcept {
    QueueStats& s = q_.stats;
    RequestParser parser(batch, q_.device.max_io_bytes, false);
    Request req;
    std::uint64_t count = 0;
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
        if (!batch_.fits(0)) { // only if the kernel sent more entries than tags
            if (BatchResult r = flush(sink); r.status != BatchStatus::served) {
                return r;
            }
        }
        int res;
        if (ps == ParseStatus::invalid) {
            s.protocol_errors.add();
            s.count_request(req.desc.op, req.desc.len);
            s.io_errors.add();
            note("malformed request: length past max_io_bytes", EPROTO, req.desc.tag);
            res = -EIO;
        } else if (fault_.armed()) [[unlikely]] {
            serve_faulty(req.desc, sink);
            continue;
        } else {
            res = serve(req.desc);
        }
        if (!batch_.add(req.desc, res)) {
            s.protocol_errors.add();
        }
    }
    return end_batch(count, sink);
}

void DescQueue::serve_faulty(const userblk_io_desc& d, CompletionSink& sink) noexcept {
    std::optional<FaultKind> f = fault_.pick(d.tag);
    if (!f) {
        put(d, serve(d), sink);
        return;
    }
    FaultPlan plan = fault_prefix(*f, d, sink);
    if (plan.drop_it) {
        return; // its data stays where it is: the device dies at the timeout
    }
    const bool is_read = d.op == USERBLK_OP_READ;
    int res = *f == FaultKind::short_len && is_read ? serve_short(d) : serve(d);
    if (plan.result) {
        if (is_read && res == 0) {
            discard(d); // answered with an error: the kernel takes none of its data
        }
        res = *plan.result;
    }
    put(d, res, sink);
    fault_suffix(*f, d, res, sink);
}

} // namespace userblk::copy
