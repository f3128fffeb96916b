#include "protocol.h"

#include <algorithm>
#include <array>
#include <bit>

namespace userblk::ring {

static_assert(alignof(userblk_ring_indices) >=
              std::atomic_ref<decltype(userblk_ring_indices::rejected)>::required_alignment);
static_assert(sizeof(userblk_ring_indices) == 320, "the uapi's four cache lines and rejected");

namespace {

std::string n(std::uint64_t v) {
    return std::to_string(v);
}

/// One region of the area: [off, off + len).
struct Region {
    const char* name;
    std::uint64_t off;
    std::uint64_t len;
};

} // namespace

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
    if (l.indices_off % alignof(userblk_ring_indices) != 0 ||
        l.sq_off % alignof(userblk_io_desc) != 0 || l.cq_off % alignof(userblk_io_cpl) != 0 ||
        l.buf_off % page != 0) {
        return "an offset is misaligned (indices " + n(l.indices_off) + ", sq " + n(l.sq_off) +
               ", cq " + n(l.cq_off) + ", buffers " + n(l.buf_off) + ")";
    }
    // No product overflows: entries < 2^32 times 24, nr_bufs < 2^32 times buf_size < 2^32.
    std::array<Region, 4> regions = {{
        {"indices", l.indices_off, sizeof(userblk_ring_indices)},
        {"submission ring", l.sq_off, std::uint64_t{l.sq_entries} * sizeof(userblk_io_desc)},
        {"completion ring", l.cq_off, std::uint64_t{l.cq_entries} * sizeof(userblk_io_cpl)},
        {"buffers", l.buf_off, std::uint64_t{l.nr_bufs} * l.buf_size},
    }};
    for (const Region& r : regions) {
        if (r.len > l.map_size || r.off > l.map_size - r.len) {
            return std::string(r.name) + ": " + n(r.len) + " bytes at " + n(r.off) +
                   ", beyond map_size " + n(l.map_size);
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
