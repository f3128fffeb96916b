// A fake of userblk.ko's side of a ring queue, over ordinary memory: it lays the area out as
// kmod/ring.c does, publishes requests as queue_rq does, and takes completions in enter() as
// RING_ENTER does, with the same checks. The tests drive the daemon's RingQueue against it.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include <unistd.h>

#include <uapi/userblk.h>

#include "core/mapping.h"
#include "transports/ring/ring.h"

namespace userblk::test {

/// The layout kmod/ring.c's ring_init_queue() computes.
inline userblk_ring_layout
kernel_layout(std::uint32_t depth, std::uint32_t max_io,
              std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE))) {
    return ring::expected_layout(depth, max_io, static_cast<std::size_t>(page));
}

/// A request for FakeRingKernel::publish().
struct FakeRequest {
    std::uint16_t tag = 0;
    std::uint8_t op = USERBLK_OP_READ;
    std::uint64_t offset = 0;
    std::uint32_t len = 0;
    std::vector<std::byte> data;      ///< a WRITE's data, copied into the tag's buffer
    std::optional<std::uint32_t> gen; ///< default: the tag's next generation
};

/// A completion the fake took, with a successful READ's data as it was in the buffer.
struct TakenCompletion {
    userblk_io_cpl cpl{};
    std::vector<std::byte> data;
};

class FakeRingKernel final : public ring::RingKernel {
public:
    /// The kernel's side of area (laid out by l); every index starts at start (to test the wrap
    /// at 2^32). Keep area alive as long as this.
    FakeRingKernel(std::byte* area, const userblk_ring_layout& l, std::uint32_t start = 0)
        : base_(area), l_(l), sq_tail_(start), cq_head_(start), outstanding_(l.nr_bufs),
          gens_(l.nr_bufs) {
        didx().sq_head = kidx().sq_tail = kidx().cq_head = didx().cq_tail = start;
        didx().flags = USERBLK_RING_NEED_WAKEUP; // as ring_init_queue() leaves it
    }

    /// queue_rq: copies a WRITE's data into the tag's buffer, writes the entry, publishes it.
    /// Returns false when the ring is full (or the daemon's head lies), as ring.c fails it.
    bool publish(const FakeRequest& r) {
        std::lock_guard lock(mutex_);
        std::uint32_t head = std::atomic_ref(didx().sq_head).load(std::memory_order_acquire);
        if (sq_tail_ - head >= l_.sq_entries) {
            ++kidx().rejected;
            return false;
        }
        userblk_io_desc d{};
        d.tag = r.tag;
        d.op = r.op;
        d.offset = r.offset;
        d.len = r.len;
        if (r.tag < l_.nr_bufs) {
            d.gen = r.gen.value_or(++gens_[r.tag]);
            outstanding_[r.tag] = d;
            if (!r.data.empty()) {
                std::memcpy(buffer(r.tag), r.data.data(), r.data.size());
            }
        } else {
            d.gen = r.gen.value_or(1);
        }
        std::memcpy(base_ + l_.sq_off + (sq_tail_ & (l_.sq_entries - 1)) * sizeof(d), &d,
                    sizeof(d));
        ++sq_tail_;
        std::atomic_ref(kidx().sq_tail).store(sq_tail_, std::memory_order_release);
        return true;
    }

    /// Publishes a raw sq_tail (a lying kernel).
    void set_sq_tail(std::uint32_t v) {
        std::atomic_ref(kidx().sq_tail).store(v, std::memory_order_release);
    }
    /// Publishes a raw cq_head (a lying kernel).
    void set_cq_head(std::uint32_t v) {
        std::atomic_ref(kidx().cq_head).store(v, std::memory_order_release);
    }
    /// The request a tag's timeout ended: the kernel forgets it (its answer will be stale).
    void time_out(std::uint16_t tag) {
        std::lock_guard lock(mutex_);
        outstanding_[tag].reset();
    }

    /// RING_ENTER: takes every completion (checked as ring.c does), then with WAIT "sleeps": it
    /// publishes the next batch of arrivals if nothing is pending, or fails with ENODEV (the
    /// device is gone) when there is none left.
    long enter(unsigned flags) noexcept override {
        std::lock_guard lock(mutex_);
        calls.push_back(flags);
        const std::uint32_t daemon_flags =
            std::atomic_ref(didx().flags).load(std::memory_order_seq_cst);
        flags_at_enter.push_back(daemon_flags);
        if ((flags & ~USERBLK_RING_ENTER_WAIT) != 0U) {
            return -EINVAL;
        }
        if (!errors.empty()) {
            int err = errors.front();
            errors.pop_front();
            return -err;
        }
        if (!reap()) {
            return -EINVAL;
        }
        if ((flags & USERBLK_RING_ENTER_WAIT) != 0U &&
            (daemon_flags & USERBLK_RING_NEED_WAKEUP) == 0U) {
            ++kidx().rejected; // nothing would wake it (ring_enter)
            return -EINVAL;
        }
        if ((flags & USERBLK_RING_ENTER_WAIT) != 0U && pending() == 0) {
            if (arrivals.empty()) {
                return -ENODEV;
            }
            for (const auto& r : arrivals.front()) {
                publish(r);
            }
            arrivals.pop_front();
        }
        return pending();
    }

    /// blk-mq's poll of a poll queue (ring_poll_hctx): takes every completion published, from
    /// the submitter's side, without the daemon. The completions it took.
    std::size_t poll() {
        std::lock_guard lock(mutex_);
        std::size_t before = taken.size();
        (void)reap();
        return taken.size() - before;
    }

    [[nodiscard]] std::uint32_t pending() const {
        std::uint32_t n = sq_tail_ - std::atomic_ref(didx().sq_head).load(std::memory_order_acquire);
        return n <= l_.sq_entries ? n : 0;
    }
    [[nodiscard]] std::uint64_t rejected() const { return kidx().rejected; }
    [[nodiscard]] std::byte* buffer(std::uint16_t tag) const {
        return base_ + l_.buf_off + std::size_t{tag} * l_.buf_size;
    }
    [[nodiscard]] userblk_ring_kernel_indices& kidx() const {
        return *reinterpret_cast<userblk_ring_kernel_indices*>(base_ + l_.kernel_off);
    }
    [[nodiscard]] userblk_ring_daemon_indices& didx() const {
        return *reinterpret_cast<userblk_ring_daemon_indices*>(base_ + l_.daemon_off);
    }

    std::vector<unsigned> calls;                   ///< flags of every enter()
    std::vector<std::uint32_t> flags_at_enter;     ///< the daemon's flags word at each enter()
    std::vector<TakenCompletion> taken;            ///< completions accepted, in order
    std::deque<std::vector<FakeRequest>> arrivals; ///< batches published by WAIT when idle
    /// Called for each completion accepted (e.g. to submit the next request, as fio at QD1).
    std::function<void(FakeRingKernel&, const userblk_io_cpl&)> on_complete;
    std::deque<int> errors; ///< positive errnos the next enter()s fail with, before anything else

private:
    bool reap() {
        std::uint32_t tail = std::atomic_ref(didx().cq_tail).load(std::memory_order_acquire);
        if (tail - cq_head_ > l_.cq_entries) {
            ++kidx().rejected;
            return false;
        }
        while (cq_head_ != tail) {
            userblk_io_cpl c{};
            std::memcpy(&c, base_ + l_.cq_off + (cq_head_ & (l_.cq_entries - 1)) * sizeof(c),
                        sizeof(c));
            ++cq_head_;
            auto& out = c.tag < l_.nr_bufs ? outstanding_[c.tag] : none_;
            if (c.reserved0 != 0 || c.reserved1 != 0 || c.result > 0 || c.result < -4095 || !out ||
                out->gen != c.gen) {
                ++kidx().rejected;
                continue;
            }
            TakenCompletion t{c, {}};
            if (out->op == USERBLK_OP_READ && c.result == 0) {
                t.data.assign(buffer(c.tag), buffer(c.tag) + out->len);
            }
            out.reset();
            taken.push_back(std::move(t));
            if (on_complete) {
                on_complete(*this, c);
            }
        }
        std::atomic_ref(kidx().cq_head).store(cq_head_, std::memory_order_release);
        return true;
    }

    std::byte* base_;
    userblk_ring_layout l_;
    std::uint32_t sq_tail_;
    std::uint32_t cq_head_;
    std::vector<std::optional<userblk_io_desc>> outstanding_;
    std::optional<userblk_io_desc> none_;
    std::vector<std::uint32_t> gens_;
    std::recursive_mutex mutex_;
};

} // namespace userblk::test
