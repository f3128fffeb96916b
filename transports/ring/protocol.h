// The ring transport's shared area as pure code: index arithmetic, the checks of what the kernel
// provides (the layout, the indices, each request entry), and typed access to the mapping with
// the memory ordering of the uapi (USERBLK_MODE_RING in uapi/userblk.h). No syscalls here, so all
// of it runs in unit tests over a fake ring in ordinary memory.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include <uapi/userblk.h>

namespace userblk::ring {

// Indices are free-running u32 that wrap at 2^32: all arithmetic on them is modulo 2^32.

/// Entries between a consumer index head and a producer index tail (tail - head, modulo 2^32).
constexpr std::uint32_t distance(std::uint32_t tail, std::uint32_t head) noexcept {
    return tail - head;
}

/// Whether tail can be the producer index of a ring of entries slots whose consumer is at head:
/// 0..entries ahead. Anything else (a tail behind head, or more than a ring ahead) is a lie.
constexpr bool in_range(std::uint32_t tail, std::uint32_t head, std::uint32_t entries) noexcept {
    return distance(tail, head) <= entries;
}

/// The slot of index in a ring of entries slots (a power of two).
constexpr std::uint32_t slot(std::uint32_t index, std::uint32_t entries) noexcept {
    return index & (entries - 1);
}

/// Why a layout returned by USERBLK_IOC_RING_LAYOUT cannot be used for a queue of queue_depth
/// requests of up to max_io_bytes, e.g. "sq_entries 48 is not a power of two"; empty when every
/// region is aligned, inside its part of the area (the kernel's indices and the submission ring
/// in the read-only part [0, rw_off), the rest in the writable part [rw_off, map_size)) and
/// disjoint from the others, and the buffers fit.
std::string layout_problem(const userblk_ring_layout& l, std::uint32_t queue_depth,
                           std::uint32_t max_io_bytes, std::size_t page_size);

/// The layout kmod/ring.c computes for a queue of queue_depth requests of up to max_io_bytes
/// (cache lines of 64 bytes): what the fakes of the tests and microbenchmarks lay out. The
/// daemon never assumes it; it checks what RING_LAYOUT returns with layout_problem().
userblk_ring_layout expected_layout(std::uint32_t queue_depth, std::uint32_t max_io_bytes,
                                    std::size_t page_size);

/// The verdict on one request entry read from the submission ring.
enum class EntryCheck : std::uint8_t {
    ok,
    bad_tag,    ///< tag >= nr_bufs: no buffer and no request to answer; dropped
    too_long,   ///< a READ or WRITE longer than a buffer: answered -EIO
    unknown_op, ///< an op this build does not know: answered -EOPNOTSUPP
};

/// Checks the fields of d that the daemon relies on for memory safety and dispatch.
EntryCheck check_request(const userblk_io_desc& d, std::uint32_t nr_bufs,
                         std::uint32_t buf_size) noexcept;

/// "tag beyond the buffers", ...: for diagnostics.
const char* entry_check_name(EntryCheck c) noexcept;

static_assert(std::atomic_ref<decltype(userblk_ring_kernel_indices::sq_tail)>::is_always_lock_free);
static_assert(
    std::atomic_ref<decltype(userblk_ring_kernel_indices::rejected)>::is_always_lock_free);
static_assert(std::atomic_ref<decltype(userblk_ring_daemon_indices::flags)>::is_always_lock_free);

/// Typed access to a shared area of a layout that passed layout_problem(). The daemon's side:
/// it loads the kernel's indices (sq_tail, cq_head) with acquire and stores its own (sq_head,
/// cq_tail) with release, as ring.c does with smp_load_acquire / smp_store_release. Entries are
/// copied once, never validated in place. Does not own the memory.
class SharedRing {
public:
    SharedRing(std::byte* base, const userblk_ring_layout& l) noexcept
        : kidx_(reinterpret_cast<userblk_ring_kernel_indices*>(base + l.kernel_off)),
          didx_(reinterpret_cast<userblk_ring_daemon_indices*>(base + l.daemon_off)),
          sq_(base + l.sq_off),
          cq_(base + l.cq_off), bufs_(base + l.buf_off), sq_entries_(l.sq_entries),
          cq_entries_(l.cq_entries), nr_bufs_(l.nr_bufs), buf_size_(l.buf_size) {}

    /// The kernel's submission tail: the request entries before it are written.
    [[nodiscard]] std::uint32_t sq_tail() const noexcept {
        return std::atomic_ref(kidx_->sq_tail).load(std::memory_order_acquire);
    }
    /// Publishes our submission head: we are done reading the entries before it.
    void set_sq_head(std::uint32_t v) const noexcept {
        std::atomic_ref(didx_->sq_head).store(v, std::memory_order_release);
    }
    /// The kernel's completion head: it is done reading the completion entries before it.
    [[nodiscard]] std::uint32_t cq_head() const noexcept {
        return std::atomic_ref(kidx_->cq_head).load(std::memory_order_acquire);
    }
    /// Publishes our completion tail: the completion entries (and READ data) before it are written.
    void set_cq_tail(std::uint32_t v) const noexcept {
        std::atomic_ref(didx_->cq_tail).store(v, std::memory_order_release);
    }
    /// Our own indices as the area holds them (their starting values).
    [[nodiscard]] std::uint32_t sq_head() const noexcept {
        return std::atomic_ref(didx_->sq_head).load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint32_t cq_tail() const noexcept {
        return std::atomic_ref(didx_->cq_tail).load(std::memory_order_relaxed);
    }
    /// Says whether the kernel must wake us when it publishes a request
    /// (USERBLK_RING_NEED_WAKEUP): set before sleeping, clear while spinning. Sequentially
    /// consistent, so that our next load of sq_tail cannot pass it: the kernel publishes sq_tail
    /// and fences before it reads the flag.
    void set_need_wakeup(bool need) const noexcept {
        std::atomic_ref(didx_->flags)
            .store(need ? USERBLK_RING_NEED_WAKEUP : 0u, std::memory_order_seq_cst);
    }
    [[nodiscard]] bool need_wakeup() const noexcept {
        return (std::atomic_ref(didx_->flags).load(std::memory_order_relaxed) &
                USERBLK_RING_NEED_WAKEUP) != 0;
    }
    /// Entries and indices the kernel refused so far.
    [[nodiscard]] std::uint64_t rejected() const noexcept {
        return std::atomic_ref(kidx_->rejected).load(std::memory_order_relaxed);
    }

    /// Our shared indices themselves, for the scribble fault (core/fault.h), which writes
    /// garbage into them on purpose. Nothing else may use this. (The kernel's are read-only.)
    [[nodiscard]] userblk_ring_daemon_indices* raw_indices() const noexcept { return didx_; }
    /// Writes raw bytes as the completion entry at index (the scribble fault).
    void put_raw_completion(std::uint32_t index, const std::byte* bytes) const noexcept {
        std::memcpy(cq_ + std::size_t{slot(index, cq_entries_)} * sizeof(userblk_io_cpl), bytes,
                    sizeof(userblk_io_cpl));
    }

    /// A copy of the request entry at index.
    [[nodiscard]] userblk_io_desc request(std::uint32_t index) const noexcept {
        userblk_io_desc d;
        std::memcpy(&d, sq_ + std::size_t{slot(index, sq_entries_)} * sizeof(d), sizeof(d));
        return d;
    }
    /// Writes the completion entry at index (published later by set_cq_tail()).
    void put_completion(std::uint32_t index, const userblk_io_cpl& c) const noexcept {
        std::memcpy(cq_ + std::size_t{slot(index, cq_entries_)} * sizeof(c), &c, sizeof(c));
    }
    /// The data buffer of tag (< nr_bufs), buf_size bytes.
    [[nodiscard]] std::span<std::byte> buffer(std::uint16_t tag) const noexcept {
        return {bufs_ + std::size_t{tag} * buf_size_, buf_size_};
    }

    [[nodiscard]] std::uint32_t sq_entries() const noexcept { return sq_entries_; }
    [[nodiscard]] std::uint32_t cq_entries() const noexcept { return cq_entries_; }
    [[nodiscard]] std::uint32_t nr_bufs() const noexcept { return nr_bufs_; }
    [[nodiscard]] std::uint32_t buf_size() const noexcept { return buf_size_; }

private:
    userblk_ring_kernel_indices* kidx_;
    userblk_ring_daemon_indices* didx_;
    std::byte* sq_;
    std::byte* cq_;
    std::byte* bufs_;
    std::uint32_t sq_entries_;
    std::uint32_t cq_entries_;
    std::uint32_t nr_bufs_;
    std::uint32_t buf_size_;
};

} // namespace userblk::ring
