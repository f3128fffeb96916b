// A ring queue's shared area in ordinary memory, laid out as kmod/ring.c lays it out, with the
// kernel's half played by the benchmark (publish requests, take completions) and the daemon's
// half done by the project's own code (ring/protocol.h: SharedRing, in_range, check_request).
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include <unistd.h>

#include "transports/ring/protocol.h"
#include "scratch.h"

namespace userblk::micro {

class FakeRingArea {
public:
    /// depth requests of up to max_io_bytes bytes; problem() is non-empty if the area is unusable.
    FakeRingArea(std::uint32_t depth, std::uint32_t max_io_bytes) {
        const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
        l_ = ring::expected_layout(depth, max_io_bytes, page);
        area_ = touched_buffer(static_cast<std::size_t>(l_.map_size));
        if (area_.size() < l_.map_size) {
            problem_ = "cannot map the ring area";
            return;
        }
        std::memset(area_.data(), 0, area_.size());
        problem_ = ring::layout_problem(l_, depth, max_io_bytes, page);
    }

    [[nodiscard]] const std::string& problem() const noexcept { return problem_; }
    [[nodiscard]] ring::SharedRing daemon() const noexcept { return {area_.data(), l_}; }
    [[nodiscard]] const userblk_ring_layout& layout() const noexcept { return l_; }
    [[nodiscard]] userblk_ring_kernel_indices& kernel_indices() const noexcept {
        return *reinterpret_cast<userblk_ring_kernel_indices*>(area_.data() + l_.kernel_off);
    }
    [[nodiscard]] userblk_ring_daemon_indices& daemon_indices() const noexcept {
        return *reinterpret_cast<userblk_ring_daemon_indices*>(area_.data() + l_.daemon_off);
    }

    // The kernel's half, as ring.c does it: entries first, then the index with a release store.

    /// Writes request d at the kernel's sq_tail and publishes it.
    void kernel_publish(const userblk_io_desc& d) noexcept {
        std::memcpy(area_.data() + l_.sq_off +
                        std::size_t{ring::slot(sq_tail_, l_.sq_entries)} * sizeof(d),
                    &d, sizeof(d));
        std::atomic_ref(kernel_indices().sq_tail).store(++sq_tail_, std::memory_order_release);
    }
    /// Writes n requests and publishes them with one index store.
    void kernel_publish_batch(const userblk_io_desc& d, std::uint32_t n) noexcept {
        for (std::uint32_t i = 0; i < n; ++i) {
            userblk_io_desc e = d;
            e.tag = static_cast<std::uint16_t>(i);
            std::memcpy(area_.data() + l_.sq_off +
                            std::size_t{ring::slot(sq_tail_ + i, l_.sq_entries)} * sizeof(e),
                        &e, sizeof(e));
        }
        sq_tail_ += n;
        std::atomic_ref(kernel_indices().sq_tail).store(sq_tail_, std::memory_order_release);
    }
    /// The daemon's completion tail as the kernel reads it.
    [[nodiscard]] std::uint32_t kernel_cq_tail() const noexcept {
        return std::atomic_ref(daemon_indices().cq_tail).load(std::memory_order_acquire);
    }
    /// Takes the completions up to tail; returns the sum of their results (to be used).
    std::int64_t kernel_take(std::uint32_t tail) noexcept {
        std::int64_t sum = 0;
        for (; cq_head_ != tail; ++cq_head_) {
            userblk_io_cpl c;
            std::memcpy(&c,
                        area_.data() + l_.cq_off +
                            std::size_t{ring::slot(cq_head_, l_.cq_entries)} * sizeof(c),
                        sizeof(c));
            sum += c.result;
        }
        std::atomic_ref(kernel_indices().cq_head).store(cq_head_, std::memory_order_release);
        return sum;
    }
    [[nodiscard]] std::uint32_t kernel_cq_head() const noexcept { return cq_head_; }

private:
    userblk_ring_layout l_{};
    Mapping area_;
    std::string problem_;
    std::uint32_t sq_tail_ = 0;
    std::uint32_t cq_head_ = 0;
};

/// The daemon's half of one pass over the ring with the project's code: takes every published
/// request (checked), writes a completion for each, publishes both indices. Returns the number
/// of requests taken, or -1 if the kernel's tail is out of range. head and cq_tail are the
/// daemon's own indices.
inline int daemon_pass(const ring::SharedRing& r, std::uint32_t& head,
                       std::uint32_t& cq_tail) noexcept {
    const std::uint32_t tail = r.sq_tail();
    if (!ring::in_range(tail, head, r.sq_entries())) {
        return -1;
    }
    int n = 0;
    for (; head != tail; ++head, ++n) {
        const userblk_io_desc d = r.request(head);
        userblk_io_cpl c{};
        c.tag = d.tag;
        c.gen = d.gen;
        c.result =
            ring::check_request(d, r.nr_bufs(), r.buf_size()) == ring::EntryCheck::ok ? 0 : -EIO;
        r.put_completion(cq_tail++, c);
    }
    r.set_sq_head(head);
    r.set_cq_tail(cq_tail);
    return n;
}

} // namespace userblk::micro
