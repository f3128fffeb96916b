#include "ring.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/io.h"
#include "core/log.h"

namespace userblk {

namespace {

constexpr std::uint32_t kMaxNotes = 16;

class RingTransport final : public KmodTransport {
public:
    RingTransport() : KmodTransport(transport_entry_ring) {}

private:
    void describe_mode(Capabilities& caps) const override {
        caps.set("requests", "shared submission ring mmap()ed from the queue fd, read in place");
        caps.set("completions", "shared completion ring; published in batches, handed over by "
                                "ioctl(RING_ENTER)");
        caps.set("layout",
                 "read-only: kernel indices (" +
                     std::to_string(sizeof(userblk_ring_kernel_indices)) +
                     " B) | submission ring E x " + std::to_string(sizeof(userblk_io_desc)) +
                     " B || read-write, from the next page: daemon indices (" +
                     std::to_string(sizeof(userblk_ring_daemon_indices)) +
                     " B) | completion ring E x " + std::to_string(sizeof(userblk_io_cpl)) +
                     " B | one buffer per tag, page aligned; E = depth rounded up to a "
                     "power of two (USERBLK_IOC_RING_LAYOUT)");
        caps.set("wake_up", "ioctl(RING_ENTER, WAIT): hands over the completions published, "
                            "then sleeps until a request is pending");
        caps.set_flag("polling", true);
        caps.set_flag("lend", false);
        // USERBLK_F_RECOVERY: a new daemon takes over the device (`userblk recover`).
        caps.set_flag("recovery", true);
        caps.set("polling_mode", "--poll-us N: spin on the submission ring up to N us before "
                                 "sleeping; completions are still handed over by RING_ENTER(0)");
        caps.set_flag("spin", true);
        caps.set("spin_mode", "--spin-us N: spin on the submission ring with NEED_WAKEUP clear "
                              "(the kernel publishes without a wake-up) and sleep after N us "
                              "idle; no syscall per request on a poll queue, one RING_ENTER(0) "
                              "per batch on a default one");
        caps.set_flag("poll_queues", true);
        caps.set("poll_queues_mode", "--poll-queues N: the last N queues take polled I/O "
                                     "(io_uring IOPOLL, RWF_HIPRI) and the submitter's blk-mq "
                                     "poll reaps their completion rings");
        caps.set("data_path", "per-tag buffers in the shared mapping: the backend reads and "
                              "writes them in place, the kernel copies them to and from the bio "
                              "pages (one copy)");
        caps.set("kernel_copy", "user");
        caps.set_flag("batching", true);
        caps.set_flag("zero_copy", false);
        caps.set_number("allocations_per_request", 0);
        caps.set_number("syscalls_per_batch", 1);
        caps.set("syscalls_per_request_qd1", "1 (RING_ENTER WAIT, which sleeps; with --poll-us "
                                             "RING_ENTER 0, which does not)");
        caps.set("queue_memory", "map_size = PAGE_ALIGN(192 + E*24) + PAGE_ALIGN(128 + E*16) + "
                                 "depth * PAGE_ALIGN(max_io_bytes), shared with the kernel (the "
                                 "first part mapped read-only); plus E*24 B for the daemon's "
                                 "copy of a batch");
        caps.set("faults", format_faults(kRingFaults));
    }

    Result<std::unique_ptr<KmodQueueWorker>> make_worker(KmodQueue& q) override {
        auto worker = ring::RingQueue::create(q, config().poll_us, config().fault);
        if (!worker.ok()) {
            return worker.status();
        }
        // The last nr_poll_queues queues are poll queues (ADD_DEV).
        const bool poll_queue = q.id + q.device.nr_poll_queues >= q.device.nr_queues;
        worker.value()->set_spinning(config().spin_us, poll_queue);
        return std::unique_ptr<KmodQueueWorker>(std::move(worker).value());
    }
};

/// RING_ENTER on the queue fd.
class FdKernel final : public ring::RingKernel {
public:
    explicit FdKernel(int fd) : fd_(fd) {}
    long enter(unsigned flags) noexcept override {
        int r = ::ioctl(fd_, USERBLK_IOC_RING_ENTER, static_cast<unsigned long>(flags));
        return r < 0 ? -errno : r;
    }

private:
    int fd_;
};

/// A pause between two looks at the submission ring while spinning.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

} // namespace

const TransportEntry transport_entry_ring{
    .name = "ring",
    .kind = TransportKind::userblk,
    .mode = USERBLK_MODE_RING,
    .summary =
        "shared submission/completion rings and per-tag buffers mmap()ed from the queue fd; one "
        "RING_ENTER per batch; optional busy-poll",
    .make = &make_transport<RingTransport>,
};

namespace ring {

Result<std::unique_ptr<RingQueue>> RingQueue::create(KmodQueue& q, std::uint32_t poll_us,
                                                     const FaultConfig& fault) {
    const std::string what = "ring: queue " + std::to_string(q.id);
    userblk_ring_layout l{};
    if (::ioctl(q.fd, USERBLK_IOC_RING_LAYOUT, &l) < 0) {
        int err = errno;
        return Status::from_errno(err, what + ": RING_LAYOUT failed",
                                  err == ENOTTY ? "the queue is not a ring queue: userblk.ko and "
                                                  "this program differ in version"
                                                : "");
    }
    // Checked before mmap: map_size must be what the kernel maps, the rest is checked again.
    std::string why = layout_problem(l, q.device.queue_depth, q.device.max_io_bytes,
                                     static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
    if (!why.empty()) {
        return Status::from_errno(EPROTO, what + ": the kernel's ring layout is unusable", why);
    }
    auto area = Mapping::shared_split(q.fd, static_cast<std::size_t>(l.rw_off),
                                      static_cast<std::size_t>(l.map_size), what);
    if (!area.ok()) {
        return area.status();
    }
    return attach(q, std::move(area).value(), l, std::make_unique<FdKernel>(q.fd), poll_us, fault);
}

Result<std::unique_ptr<RingQueue>> RingQueue::attach(KmodQueue& q, Mapping area,
                                                     const userblk_ring_layout& l,
                                                     std::unique_ptr<RingKernel> kernel,
                                                     std::uint32_t poll_us,
                                                     const FaultConfig& fault) {
    const std::string what = "ring: queue " + std::to_string(q.id);
    std::string why = layout_problem(l, q.device.queue_depth, q.device.max_io_bytes,
                                     static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
    if (why.empty() && area.size() != l.map_size) {
        why = "the mapping has " + std::to_string(area.size()) + " bytes, map_size is " +
              std::to_string(l.map_size);
    }
    if (!why.empty()) {
        return Status::from_errno(EPROTO, what + ": the kernel's ring layout is unusable", why);
    }
    SharedRing ring(area.data(), l);
    if (!in_range(ring.sq_tail(), ring.sq_head(), l.sq_entries) ||
        !in_range(ring.cq_tail(), ring.cq_head(), l.cq_entries)) {
        return Status::from_errno(
            EPROTO, what + ": the ring's indices are inconsistent",
            "sq " + std::to_string(ring.sq_head()) + ".." + std::to_string(ring.sq_tail()) +
                ", cq " + std::to_string(ring.cq_head()) + ".." + std::to_string(ring.cq_tail()));
    }
    return std::unique_ptr<RingQueue>(
        new RingQueue(q, std::move(area), l, std::move(kernel), poll_us, fault));
}

RingQueue::RingQueue(KmodQueue& q, Mapping area, const userblk_ring_layout& l,
                     std::unique_ptr<RingKernel> kernel, std::uint32_t poll_us,
                     const FaultConfig& fault)
    : q_(q), area_(std::move(area)), ring_(area_.data(), l), kernel_(std::move(kernel)),
      poll_us_(poll_us), sq_head_(ring_.sq_head()), cq_tail_(ring_.cq_tail()),
      cq_head_seen_(ring_.cq_head()), rejected_base_(ring_.rejected()), batch_(l.sq_entries),
      last_of_tag_(l.nr_bufs), fault_(fault, "ring", q.id, q.device.timeout_ms) {}

void RingQueue::note(const char* what, int err, std::uint16_t tag) noexcept {
    if (notes_ >= kMaxNotes) {
        return;
    }
    ++notes_;
    const char* text = ::strerrordesc_np(err); // no allocation, unlike strerror's friends
    log_error("ring: queue %u: %s (tag %u): %s%s", q_.id, what, static_cast<unsigned>(tag),
              text != nullptr ? text : "unknown error",
              notes_ == kMaxNotes ? "; further problems on this queue are only counted" : "");
}

StepStatus RingQueue::fail(int err, const char* what, std::uint32_t got,
                           std::uint32_t ours) noexcept {
    q_.stats.protocol_errors.add();
    try {
        error_ = Status::from_errno(err, "ring: queue " + std::to_string(q_.id) + ": " + what,
                                    "kernel index " + std::to_string(got) + ", ours " +
                                        std::to_string(ours));
    } catch (...) {
        error_ = Status::from_errno(err, "ring: a fatal protocol error");
    }
    return StepStatus::failed;
}

long RingQueue::enter(unsigned flags) noexcept {
    QueueStats& s = q_.stats;
    long r = kernel_->enter(flags);
    s.wait_calls.add();
    if (unhanded_ > 0 && r != -EINVAL) { // EINVAL: the kernel took none of them
        QueueStats::count_batch(s.completion_batches, unhanded_);
        unhanded_ = 0;
    }
    s.rejected_completions.raise_to(ring_.rejected() - rejected_base_);
    return r;
}

int RingQueue::run_request(const userblk_io_desc& d) noexcept {
    std::span<std::byte> data;
    if (d.op == USERBLK_OP_READ || d.op == USERBLK_OP_WRITE) {
        data = ring_.buffer(d.tag).first(d.len); // check_request(): len <= buf_size
    }
    return execute(q_.backend, q_.backend_queue, d, data); // counts the data in our memory
}

int RingQueue::refuse_request(const userblk_io_desc& d, EntryCheck why) noexcept {
    QueueStats& s = q_.stats;
    s.protocol_errors.add();
    note(entry_check_name(why), EPROTO, d.tag);
    if (why == EntryCheck::unknown_op) {
        return execute(q_.backend, q_.backend_queue, d, {}); // counted as "other": -EOPNOTSUPP
    }
    s.count_request(d.op, d.len);
    s.io_errors.add();
    return -EIO;
}

StepStatus RingQueue::push_completion(const userblk_io_desc& d, std::int32_t result) noexcept {
    const std::uint32_t entries = ring_.cq_entries();
    if (distance(cq_tail_, cq_head_seen_) >= entries) {
        cq_head_seen_ = ring_.cq_head();
        if (!in_range(cq_tail_, cq_head_seen_, entries)) {
            return fail(EPROTO, "the kernel's completion head is out of range", cq_head_seen_,
                        cq_tail_);
        }
        if (distance(cq_tail_, cq_head_seen_) >= entries) {
            // Full (answers to timed-out requests are still in it): hand it over to make room.
            ring_.set_cq_tail(cq_tail_);
            long r = enter(0);
            if (r == -ENODEV) {
                return StepStatus::device_gone;
            }
            cq_head_seen_ = ring_.cq_head();
            if (r < 0 || !in_range(cq_tail_, cq_head_seen_, entries) ||
                distance(cq_tail_, cq_head_seen_) >= entries) {
                return fail(r < 0 ? static_cast<int>(-r) : EPROTO,
                            "the kernel took no completion from a full completion ring",
                            cq_head_seen_, cq_tail_);
            }
        }
    }
    userblk_io_cpl c{};
    c.tag = d.tag;
    c.gen = d.gen;
    c.result = result;
    ring_.put_completion(cq_tail_, c);
    ++cq_tail_;
    ++unhanded_;
    return StepStatus::served;
}

/// The fault mode's way into a ring queue (core/fault.h): completions go into the completion
/// ring, a RING_ENTER hands them over.
class RingQueue::Seam final : public FaultSeam {
public:
    explicit Seam(RingQueue& q) noexcept : q_(q) {}

    [[nodiscard]] std::uint32_t depth() const noexcept override { return q_.q_.device.queue_depth; }
    bool send(const userblk_io_desc& d, std::int32_t res) noexcept override {
        status = q_.push_completion(d, res);
        return status == StepStatus::served;
    }
    bool flush() noexcept override {
        q_.ring_.set_cq_tail(q_.cq_tail_);
        if (q_.enter(0) == -ENODEV) {
            status = StepStatus::device_gone;
            return false;
        }
        return true;
    }
    std::optional<std::int32_t> answer(const userblk_io_desc& d,
                                       bool /*short_read*/) noexcept override {
        // A ring completion has no length: the short fault is not offered (kRingFaults).
        const EntryCheck check = check_request(d, q_.ring_.nr_bufs(), q_.ring_.buf_size());
        const int res = check == EntryCheck::ok ? q_.run_request(d) : q_.refuse_request(d, check);
        if (!send(d, res)) {
            return std::nullopt;
        }
        return res;
    }
    void scribble() noexcept override { q_.scribble(); }

    StepStatus status = StepStatus::served; ///< why the pass cannot go on, when a method said so

private:
    RingQueue& q_;
};

StepStatus RingQueue::serve_available() noexcept {
    QueueStats& s = q_.stats;
    const std::uint32_t tail = ring_.sq_tail();
    const std::uint32_t n = distance(tail, sq_head_);
    if (n == 0) {
        return StepStatus::served;
    }
    if (n > ring_.sq_entries()) {
        return fail(EPROTO, "the kernel's submission tail is more than a ring ahead", tail,
                    sq_head_);
    }
    // Copy the entries out, then free their slots: the kernel may reuse them at once.
    for (std::uint32_t i = 0; i < n; ++i) {
        batch_[i] = ring_.request(sq_head_ + i);
    }
    sq_head_ = tail;
    ring_.set_sq_head(sq_head_);
    QueueStats::count_batch(s.request_batches, n);
    Seam seam(*this);
    if (fault_.armed() && !fault_.begin_batch(seam)) [[unlikely]] {
        return seam.status;
    }

    // A tag seen twice in one pass was reused by the kernel: the earlier request timed out (its
    // answer would be refused as stale) and its buffer now holds the later one's data. Only the
    // latest entry of a tag runs, so a stale READ cannot overwrite a new WRITE's data.
    for (std::uint32_t i = 0; i < n; ++i) {
        if (batch_[i].tag < ring_.nr_bufs()) {
            last_of_tag_[batch_[i].tag] = i;
        }
    }
    for (std::uint32_t i = 0; i < n; ++i) {
        const userblk_io_desc& d = batch_[i];
        EntryCheck check = check_request(d, ring_.nr_bufs(), ring_.buf_size());
        if (check == EntryCheck::bad_tag) {
            s.protocol_errors.add(); // no buffer, and no request the kernel could match
            note(entry_check_name(check), EPROTO, d.tag);
            continue;
        }
        if (last_of_tag_[d.tag] != i) {
            continue;
        }
        if (fault_.armed()) [[unlikely]] {
            if (!fault_.complete(d, seam)) {
                return seam.status;
            }
            continue;
        }
        int result = check == EntryCheck::ok ? run_request(d) : refuse_request(d, check);
        StepStatus st = push_completion(d, result);
        if (st != StepStatus::served) {
            return st;
        }
    }
    ring_.set_cq_tail(cq_tail_);
    return StepStatus::served;
}

void RingQueue::scribble() noexcept {
    userblk_ring_daemon_indices* idx = ring_.raw_indices();
    const std::uint32_t garbage = static_cast<std::uint32_t>(fault_.next());
    // Out of range for sure: more than a ring away from anything valid.
    const std::uint32_t far = cq_tail_ + ring_.cq_entries() + 1 + (garbage >> 1);
    ring_.set_cq_tail(cq_tail_);
    // The kernel's own indices (sq_tail, cq_head) are mapped read-only: nothing to scribble.
    switch (fault_.below(3)) {
    case 0: { // our submission head
        std::atomic_ref(idx->sq_head).store(garbage, std::memory_order_release);
        (void)enter(0);
        ring_.set_sq_head(sq_head_);
        break;
    }
    case 1: { // our completion tail, out of range: RING_ENTER must refuse it
        std::atomic_ref(idx->cq_tail).store(far, std::memory_order_release);
        long r = kernel_->enter(0);
        q_.stats.wait_calls.add();
        if (r != -EINVAL && r != -ENODEV) {
            note("the kernel took an out-of-range completion tail", EPROTO, 0);
        }
        ring_.set_cq_tail(cq_tail_);
        (void)enter(0);
        break;
    }
    default: { // a published completion entry of random bytes (its reserved fields half the
               // time zero, so that the tag and gen are looked at; its result is then -EIO)
        std::byte raw[sizeof(userblk_io_cpl)];
        for (std::size_t i = 0; i < sizeof(raw); i += 8) {
            std::uint64_t v = fault_.next();
            std::memcpy(raw + i, &v, std::min<std::size_t>(8, sizeof(raw) - i));
        }
        if (fault_.below(2) == 0) {
            userblk_io_cpl c;
            std::memcpy(&c, raw, sizeof(c));
            c.reserved0 = 0;
            c.reserved1 = 0;
            c.result = -EIO;
            std::memcpy(raw, &c, sizeof(c));
        }
        if (distance(cq_tail_, ring_.cq_head()) < ring_.cq_entries()) {
            ring_.put_raw_completion(cq_tail_, raw);
            ++cq_tail_;
            ++unhanded_;
            ring_.set_cq_tail(cq_tail_);
            (void)enter(0);
        }
        break;
    }
    }
}

bool RingQueue::spin(const std::stop_token& stop, std::uint32_t us) const noexcept {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
    do {
        for (int i = 0; i < 16; ++i) {
            if (ring_.sq_tail() != sq_head_) {
                return true;
            }
            cpu_relax();
        }
    } while (std::chrono::steady_clock::now() < deadline && !stop.stop_requested());
    return ring_.sq_tail() != sq_head_;
}

// The loop. serve_available() takes every request published, runs it in its buffer, writes the
// completions and publishes cq_tail, without a syscall; then:
//
//   wait mode (poll_us 0):  RING_ENTER(WAIT) hands the completions over and sleeps until the next
//       request; if one is already pending it returns at once. QD1 costs one syscall per request,
//       plus a sleep and a wake-up (two context switches); under load one syscall per batch.
//   poll mode (poll_us N):  completions are handed over at once with RING_ENTER(0), which does
//       not sleep and returns the requests already pending; then the loop spins on sq_tail for up
//       to N us and only then sleeps with RING_ENTER(WAIT) (nothing is left to hand over then).
//       QD1 with requests arriving within N us: one syscall per request and no sleep or wake-up;
//       an idle queue costs one RING_ENTER(WAIT) per idle period, after N us of spinning.
//   spin mode (set_spinning): run_spinning() below.
//
// The kernel takes completions only in RING_ENTER (and, on a poll queue, in the submitter's
// poll), so a completion is never left waiting while the loop spins or sleeps.
Status RingQueue::run(std::stop_token stop) {
    if (spin_us_ != 0) {
        return run_spinning(stop);
    }
    while (true) {
        if (auto end = serve_step()) {
            return *end;
        }
        unsigned flags = USERBLK_RING_ENTER_WAIT;
        if (poll_us_ != 0) {
            if (unhanded_ > 0) {
                flags = 0; // hand the completions over now, without sleeping
            } else if (spin(stop, poll_us_)) {
                continue; // a request arrived while spinning
            }
        }
        long r = enter(flags);
        if (r >= 0) {
            continue;
        }
        if (auto end = after_failed_enter(r, stop)) {
            return *end;
        }
    }
}

// Spin mode. NEED_WAKEUP is clear while the loop spins, so the kernel publishes requests without
// waking anyone. While requests keep coming within spin_us_ the loop makes no syscall at all on a
// poll queue (the submitter's poll reaps cq_tail) and one RING_ENTER(0) per batch of completions
// on a default queue. After spin_us_ idle it sets NEED_WAKEUP, looks at sq_tail once more (the
// flag's store is sequentially consistent, the kernel fences between publishing sq_tail and
// reading the flag, so a request published meanwhile is seen by one side or the other) and
// sleeps in RING_ENTER(WAIT), which also hands over any completion the submitter has not polled.
Status RingQueue::run_spinning(std::stop_token stop) {
    ring_.set_need_wakeup(false);
    while (true) {
        if (auto end = serve_step()) {
            return *end;
        }
        if (unhanded_ > 0) {
            if (poll_queue_) {
                // Published for the submitter's poll: no syscall hands them over.
                QueueStats::count_batch(q_.stats.completion_batches, unhanded_);
                unhanded_ = 0;
            } else {
                long r = enter(0);
                if (r < 0) {
                    if (auto end = after_failed_enter(r, stop)) {
                        return *end;
                    }
                }
                continue;
            }
        }
        if (spin(stop, spin_us_)) {
            continue;
        }
        ring_.set_need_wakeup(true);
        if (ring_.sq_tail() != sq_head_) {
            ring_.set_need_wakeup(false);
            continue;
        }
        long r = enter(USERBLK_RING_ENTER_WAIT);
        ring_.set_need_wakeup(false);
        if (r >= 0) {
            continue;
        }
        if (auto end = after_failed_enter(r, stop)) {
            return *end;
        }
    }
}

std::optional<Status> RingQueue::serve_step() {
    switch (serve_available()) {
    case StepStatus::served:
        return std::nullopt;
    case StepStatus::device_gone:
        return Status{};
    case StepStatus::failed:
        break;
    }
    return error_;
}

std::optional<Status> RingQueue::after_failed_enter(long r, const std::stop_token& stop) {
    if (r == -ENODEV) {
        return Status{}; // the device was stopped or deleted: no request will come
    }
    if (r == -EINTR) {
        if (stop.stop_requested()) {
            return Status{};
        }
        return std::nullopt;
    }
    const std::string what = "ring: RING_ENTER on queue " + std::to_string(q_.id) + " failed";
    if (r == -EINVAL) {
        q_.stats.protocol_errors.add();
        return Status::from_errno(EINVAL, what,
                                  "the kernel refused the completion tail " +
                                      std::to_string(cq_tail_) + " (its head " +
                                      std::to_string(ring_.cq_head()) + ")");
    }
    return Status::from_errno(static_cast<int>(-r), what);
}

} // namespace ring
} // namespace userblk
