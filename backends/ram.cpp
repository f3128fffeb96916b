// The ram backend: a memory store of the device's size.
//
// Memory: one anonymous private mapping of the whole size, made at creation with MAP_NORESERVE,
// so a large device costs nothing until written; untouched pages read as zeros (the shared zero
// page); nothing is allocated per I/O. Like brd, the first write to a page takes a page fault.
//
// Concurrency: no lock at all. Each queue's thread copies directly to and from the mapping. The
// block layer gives no order between requests in flight at the same time, so two overlapping
// requests in flight on different queues have no defined outcome on any block device; a file
// system or fio with verify never issues them, and brd copies without a per-sector lock too. Any
// lock we took would only serialise requests that are already unordered and would cost every
// I/O. What this does not give: atomicity of a sector against a concurrent overlapping write
// (a reader racing a writer of the same range may see a mix), as with brd.
//
// Discard and write-zeroes zero the range: whole pages are returned to the kernel with
// madvise(MADV_DONTNEED) (they read as zeros afterwards and free the memory), the partial pages
// at either end are cleared with memset.
#include <cerrno>
#include <cstring>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

#include "backends.h"
#include "core/io.h"
#include "core/size.h"
#include "options.h"

namespace userblk {

namespace {

class RamBackend final : public Backend {
public:
    RamBackend(Mapping memory, std::uint64_t size)
        : memory_(std::move(memory)), size_(size),
          page_(static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE))) {}

    [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }

    int read(BackendQueue& /*q*/, std::uint64_t off, std::span<std::byte> dst) noexcept override {
        if (!range_ok(off, dst.size(), size_)) {
            return -EINVAL;
        }
        if (!dst.empty()) {
            std::memcpy(dst.data(), memory_.data() + off, dst.size());
        }
        return 0;
    }

    int
    write(BackendQueue& /*q*/, std::uint64_t off, std::span<const std::byte> src,
          std::uint32_t /*flags: memory is as durable as it gets, FUA changes nothing*/) noexcept
        override {
        if (!range_ok(off, src.size(), size_)) {
            return -EINVAL;
        }
        if (!src.empty()) {
            std::memcpy(memory_.data() + off, src.data(), src.size());
        }
        return 0;
    }

    int discard(BackendQueue& /*q*/, std::uint64_t off, std::uint64_t len) noexcept override {
        return zero_range(off, len);
    }

    int write_zeroes(BackendQueue& /*q*/, std::uint64_t off, std::uint64_t len,
                     std::uint32_t /*flags*/ = 0) noexcept override {
        return zero_range(off, len);
    }

    /// No cache: a completed write is in the store, so flush has nothing to do.
    [[nodiscard]] BackendServes serves() const noexcept override {
        return {.write = true, .cache = false, .discard = true, .write_zeroes = true};
    }

    void describe(Capabilities& caps) const override {
        caps.set("storage", "anonymous memory, MAP_NORESERVE, backed on first write");
        caps.set_flag("flush", true);
        caps.set_flag("discard", true);
        caps.set_flag("write_zeroes", true);
        caps.set("discard_effect", "zeroes the range, frees whole pages");
        caps.set("pipe_path", "adapter");
        caps.set("locking", "none");
        caps.set_flag("multi_conn", true); // every queue sees one memory: no per-queue cache
    }

private:
    int zero_range(std::uint64_t off, std::uint64_t len) noexcept {
        if (!range_ok(off, len, size_)) {
            return -EINVAL;
        }
        std::byte* base = memory_.data();
        std::uint64_t end = off + len;
        std::uint64_t first_page = (off + page_ - 1) / page_ * page_;
        std::uint64_t last_page = end / page_ * page_;
        if (first_page < last_page &&
            ::madvise(base + first_page, last_page - first_page, MADV_DONTNEED) == 0) {
            if (off < first_page) {
                std::memset(base + off, 0, first_page - off);
            }
            if (last_page < end) {
                std::memset(base + last_page, 0, end - last_page);
            }
            return 0;
        }
        if (len > 0) {
            std::memset(base + off, 0, len);
        }
        return 0;
    }

    Mapping memory_;
    std::uint64_t size_;
    std::uint64_t page_;
};

} // namespace

Result<std::unique_ptr<Backend>> make_ram_backend(const BackendConfig& cfg) {
    static_assert(sizeof(std::size_t) >= sizeof(std::uint64_t), "ram needs a 64-bit address space");
    if (Status st = check_options("ram", cfg.options, kRamOptions); !st.ok()) {
        return st;
    }
    auto memory = Mapping::anonymous(static_cast<std::size_t>(cfg.size), true,
                                     "ram: memory for a " + format_size(cfg.size) + " device");
    if (!memory.ok()) {
        return memory.status();
    }
    return std::unique_ptr<Backend>(
        std::make_unique<RamBackend>(std::move(memory).value(), cfg.size));
}

} // namespace userblk
