#include "protocol.h"

#include <userblk_ring_layout.h>

#include <algorithm>
#include <array>
#include <bit>

namespace userblk::ring {

static_assert(alignof(userblk_ring_kernel_indices) >=
              std::atomic_ref<decltype(userblk_ring_kernel_indices::rejected)>::required_alignment);
static_assert(sizeof(userblk_ring_kernel_indices) == 192, "the uapi's three cache lines");
static_assert(sizeof(userblk_ring_daemon_indices) == 128, "the uapi's two cache lines");

namespace {

std::string n(std::uint64_t v) {
    return std::to_string(v);
}

/// One region of the area: [off, off + len), in the read-only part or the writable one.
struct Region {
    const char* name;
    std::uint64_t off;
    std::uint64_t len;
    bool writable;
};

} // namespace

userblk_ring_layout expected_layout(std::uint32_t queue_depth, std::uint32_t max_io_bytes,
                                    std::size_t page_size) {
    userblk_ring_layout l{};
    // ring.c's own computation, with x86-64's SMP_CACHE_BYTES.
    userblk_ring_lay_out(&l, queue_depth, max_io_bytes, page_size, 64);
    return l;
}

std::string layout_problem(const userblk_ring_layout& l, std::uint32_t queue_depth,
                           std::uint32_t max_io_bytes, std::size_t page_size) {
    const std::uint64_t page = page_size;
    if (l.nr_bufs != queue_depth) {
        return "nr_bufs " + n(l.nr_bufs) + " differs from the queue depth " + n(queue_depth);
    }
    for (auto [name, entries] :
         {std::pair{"sq_entries", l.sq_entries}, {"cq_entries", l.cq_entries}}) {
        if (!std::has_single_bit(entries)) {
            return std::string(name) + " " + n(entries) + " is not a power of two";
        }
        if (entries < queue_depth) {
            return std::string(name) + " " + n(entries) + " is below the queue depth " +
                   n(queue_depth);
        }
    }
    if (l.buf_size < max_io_bytes || l.buf_size == 0 || l.buf_size % page != 0) {
        return "buf_size " + n(l.buf_size) + " is not a multiple of the page size " + n(page) +
               " holding max_io_bytes " + n(max_io_bytes);
    }
    if (l.map_size == 0 || l.map_size % page != 0 || l.map_size > SIZE_MAX) {
        return "map_size " + n(l.map_size) + " is not a positive multiple of the page size";
    }
    if (l.rw_off == 0 || l.rw_off >= l.map_size || l.rw_off % page != 0) {
        return "rw_off " + n(l.rw_off) + " is not a page boundary inside map_size " +
               n(l.map_size);
    }
    if (l.kernel_off % alignof(userblk_ring_kernel_indices) != 0 ||
        l.daemon_off % alignof(userblk_ring_daemon_indices) != 0 ||
        l.sq_off % alignof(userblk_io_desc) != 0 || l.cq_off % alignof(userblk_io_cpl) != 0 ||
        l.buf_off % page != 0) {
        return "an offset is misaligned (kernel indices " + n(l.kernel_off) + ", daemon indices " +
               n(l.daemon_off) + ", sq " + n(l.sq_off) + ", cq " + n(l.cq_off) + ", buffers " +
               n(l.buf_off) + ")";
    }
    // No product overflows: entries < 2^32 times 24, nr_bufs < 2^32 times buf_size < 2^32.
    std::array<Region, 5> regions = {{
        {"kernel indices", l.kernel_off, sizeof(userblk_ring_kernel_indices), false},
        {"submission ring", l.sq_off, std::uint64_t{l.sq_entries} * sizeof(userblk_io_desc),
         false},
        {"daemon indices", l.daemon_off, sizeof(userblk_ring_daemon_indices), true},
        {"completion ring", l.cq_off, std::uint64_t{l.cq_entries} * sizeof(userblk_io_cpl), true},
        {"buffers", l.buf_off, std::uint64_t{l.nr_bufs} * l.buf_size, true},
    }};
    for (const Region& r : regions) {
        const std::uint64_t lo = r.writable ? l.rw_off : 0;
        const std::uint64_t hi = r.writable ? l.map_size : l.rw_off;
        if (r.off < lo || r.len > hi - lo || r.off - lo > hi - lo - r.len) {
            return std::string(r.name) + ": " + n(r.len) + " bytes at " + n(r.off) +
                   ", outside the " + (r.writable ? "writable" : "read-only") + " part [" +
                   n(lo) + ", " + n(hi) + ")";
        }
    }
    std::sort(regions.begin(), regions.end(),
              [](const Region& a, const Region& b) { return a.off < b.off; });
    for (std::size_t i = 0; i + 1 < regions.size(); ++i) {
        if (regions[i].off + regions[i].len > regions[i + 1].off) {
            return std::string("overlapping regions: ") + regions[i].name + " and " +
                   regions[i + 1].name;
        }
    }
    return {};
}

EntryCheck check_request(const userblk_io_desc& d, std::uint32_t nr_bufs,
                         std::uint32_t buf_size) noexcept {
    if (d.tag >= nr_bufs) {
        return EntryCheck::bad_tag;
    }
    switch (d.op) {
    case USERBLK_OP_READ:
    case USERBLK_OP_WRITE:
        return d.len <= buf_size ? EntryCheck::ok : EntryCheck::too_long;
    case USERBLK_OP_FLUSH:
    case USERBLK_OP_DISCARD:
    case USERBLK_OP_WRITE_ZEROES:
        return EntryCheck::ok; // no data in the buffer; the range is checked by execute()
    default:
        return EntryCheck::unknown_op;
    }
}

const char* entry_check_name(EntryCheck c) noexcept {
    switch (c) {
    case EntryCheck::ok:
        return "valid request";
    case EntryCheck::bad_tag:
        return "request with a tag beyond the buffers";
    case EntryCheck::too_long:
        return "request longer than its buffer";
    case EntryCheck::unknown_op:
        return "request with an unknown operation";
    }
    return "request";
}

} // namespace userblk::ring
