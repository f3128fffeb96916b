// The file backend: a regular file holding the device's bytes at the same offsets.
//
// Setup: path= (absolute: a daemon runs in /) is opened O_RDWR and created (mode 0644) if
// missing; with direct=1 also O_DIRECT (see Direct I/O below). A file smaller than the device is extended with ftruncate() (sparse: the new range
// reads as zeros and takes no space); a larger one is used for its first size bytes and never
// shrunk. Anything but a regular file (a directory, a block device, a FIFO) is refused: a block
// device could not be extended and would want O_DIRECT, which is another backend.
//
// Memory: none of its own; the data lives in the page cache. The memory path copies between the
// caller's buffer and the cache with pread()/pwrite(). The pipe path (native_pipe()) splices, so
// the data never enters the daemon's memory: splice(file -> pipe) gives the pipe references to
// page-cache pages (no copy), splice(pipe -> file) copies the pipe's pages into the cache inside
// the kernel. Neither counts adapter_copied_bytes.
//
// Concurrency: one fd shared by every queue, positional calls only (pread, pwrite, splice with an
// offset, fallocate), so no lock and no per-queue state. Requests in flight at the same time on
// overlapping ranges have no defined order, as on any block device; the page cache makes no
// request atomic. A read spliced into a pipe holds references to cache pages until the
// transport drains the pipe (no later than its completion), so only a write to the same range
// that is itself in flight at that time can show in it: an unordered pair anyway.
//
// Durability: a completed write is in the page cache. flush is fdatasync(). A FUA write is
// followed by fdatasync() before it completes, on both paths. fdatasync() writes back every dirty
// page of the file, not only the request's range, so FUA costs more while other writes are
// pending; no call makes just a range durable from user space (sync_file_range() writes neither
// metadata nor the disk's cache), and pwritev2(RWF_DSYNC) exists for the memory path only: one
// rule for both paths keeps them comparable.
//
// Direct I/O (direct=1): no page cache, so the pipe path moves the data between the pipe's pages
// and the disk with no copy at all: splice(pipe -> file) writes the pipe's pages themselves
// (iter_file_splice_write hands them to the file's direct write_iter), splice(file -> pipe) reads
// into fresh pipe pages. The file system says what it takes (statx STATX_DIOALIGN): file offsets
// and lengths in multiples of dio_offset_align, which the device's block size must be (checked
// when the backend is made), and memory aligned to dio_mem_align. The memory path's buffers are
// page-aligned except copy's inline data, which follows its descriptor: such a buffer is bounced
// through an aligned buffer of the queue's (one memcpy in the daemon, not counted). tmpfs refuses
// O_DIRECT on Linux 6.1; the file must live on a file system that takes it (ext4, xfs).
//
// Discard punches a hole (fallocate PUNCH_HOLE|KEEP_SIZE: reads as zeros, frees the blocks), or
// is EOPNOTSUPP where the file system cannot: probed when the backend is made (a hole punched past
// the end of the file), so a device over such a file system does not offer discard.
// Write-zeroes tries ZERO_RANGE, then PUNCH_HOLE, then writes zero blocks
// (Backend::write_zeroes); what a file system refused once is not tried again.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends.h"
#include "core/io.h"
#include "core/mapping.h"
#include "core/pipes.h"
#include "core/size.h"
#include "core/unique_fd.h"
#include "options.h"

namespace userblk {

namespace {

/// direct=1: a queue's aligned bounce buffer (max_io_bytes) for unaligned memory buffers.
struct DirectBounce final : BackendQueueState {
    Mapping buffer;
};

class FileBackend final : public Backend {
public:
    FileBackend(unique_fd fd, std::uint64_t size, std::uint32_t mem_align,
                std::uint32_t max_io_bytes)
        : fd_(std::move(fd)), size_(size), mem_align_(mem_align), max_io_bytes_(max_io_bytes) {}

    Status init_queue(BackendQueue& q) override {
        if (mem_align_ == 0) {
            return {};
        }
        auto m = Mapping::anonymous(max_io_bytes_, true, "file: direct I/O bounce buffer");
        if (!m.ok()) {
            return m.status();
        }
        auto state = std::make_unique<DirectBounce>();
        state->buffer = std::move(m).value();
        q.set_state(std::move(state));
        return {};
    }

    [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }

    int read(BackendQueue& q, std::uint64_t off, std::span<std::byte> dst) noexcept override {
        if (!range_ok(off, dst.size(), size_)) {
            return -EINVAL;
        }
        std::uint64_t calls = 0; // -EIO at end of file: the file was shrunk behind our back
        std::span<std::byte> bounce = bounce_for(q, dst.data(), dst.size());
        int r = pio_exact(fd_.get(), bounce.empty() ? dst : bounce, off, false, &calls);
        q.stats().data_calls.add(calls);
        if (r == 0 && !bounce.empty()) {
            std::memcpy(dst.data(), bounce.data(), dst.size());
        }
        return r;
    }

    int write(BackendQueue& q, std::uint64_t off, std::span<const std::byte> src,
              std::uint32_t flags) noexcept override {
        if (!range_ok(off, src.size(), size_)) {
            return -EINVAL;
        }
        // pio_exact() only reads from the span when writing.
        std::span<std::byte> bytes(const_cast<std::byte*>(src.data()), src.size());
        if (std::span<std::byte> bounce = bounce_for(q, src.data(), src.size()); !bounce.empty()) {
            std::memcpy(bounce.data(), src.data(), src.size());
            bytes = bounce;
        }
        std::uint64_t calls = 0;
        int r = pio_exact(fd_.get(), bytes, off, true, &calls);
        q.stats().data_calls.add(calls);
        return r != 0 ? r : finish_write(flags);
    }

    int flush(BackendQueue& /*q*/) noexcept override { return sync(); }

    int discard(BackendQueue& q, std::uint64_t off, std::uint64_t len) noexcept override {
        if (!range_ok(off, len, size_)) {
            return -EINVAL;
        }
        int r = fallocate_range(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len, punch_ok_);
        return r == -EOPNOTSUPP ? Backend::discard(q, off, len) : r;
    }

    int write_zeroes(BackendQueue& q, std::uint64_t off, std::uint64_t len,
                     std::uint32_t flags = 0) noexcept override {
        if (!range_ok(off, len, size_)) {
            return -EINVAL;
        }
        int r = fallocate_range(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len, zero_ok_);
        // A hole reads as zeros too, but NOUNMAP asks to keep the blocks: then write them.
        if (r == -EOPNOTSUPP && (flags & USERBLK_IO_F_NOUNMAP) == 0) {
            r = fallocate_range(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len, punch_ok_);
        }
        return r == -EOPNOTSUPP ? Backend::write_zeroes(q, off, len, flags) : r;
    }

    int read_to_pipe(BackendQueue& q, int pipe_fd, std::uint64_t off,
                     std::uint32_t len) noexcept override {
        if (!range_ok(off, len, size_)) {
            return -EINVAL;
        }
        auto pos = static_cast<loff_t>(off);
        std::size_t calls = 0; // -EIO at end of file: the file was shrunk behind our back
        int r = splice_exact(fd_.get(), &pos, pipe_fd, nullptr, len, 0, &calls);
        q.stats().data_calls.add(calls);
        return r;
    }

    int write_from_pipe(BackendQueue& q, int pipe_fd, std::uint64_t off, std::uint32_t len,
                        std::uint32_t flags) noexcept override {
        if (!range_ok(off, len, size_)) {
            return -EINVAL;
        }
        auto pos = static_cast<loff_t>(off);
        std::size_t calls = 0;
        int r = splice_exact(pipe_fd, nullptr, fd_.get(), &pos, len, 0, &calls);
        q.stats().data_calls.add(calls);
        return r != 0 ? r : finish_write(flags);
    }

    [[nodiscard]] bool native_pipe() const noexcept override { return true; }

    /// The page cache is a volatile cache (flush and FUA: fdatasync()); discard as far as the
    /// file system punches holes (probe_punch()).
    [[nodiscard]] BackendServes serves() const noexcept override {
        return {.write = true,
                .cache = true,
                .discard = punch_ok_.load(std::memory_order_relaxed),
                .write_zeroes = true};
    }

    /// Asks the file system whether it punches holes, where a hole harms nothing: past the end
    /// of the file (KEEP_SIZE), a range no byte of the device lives in. Only EOPNOTSUPP (or a
    /// file system without fallocate) counts as no; it is remembered as a refusal would be.
    void probe_punch(std::uint64_t file_size) noexcept {
        constexpr off_t kProbe = 4096;
        int r = ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            static_cast<off_t>(file_size), kProbe);
        if (r < 0 && (errno == EOPNOTSUPP || errno == ENOSYS)) {
            punch_ok_.store(false, std::memory_order_relaxed);
        }
    }

    void describe(Capabilities& caps) const override { describe_file_backend(caps); }

private:
    /// direct=1 and p not aligned for direct I/O: the queue's bounce buffer, len bytes; else
    /// empty (use p itself).
    std::span<std::byte> bounce_for(BackendQueue& q, const void* p, std::size_t len) const noexcept {
        if (mem_align_ == 0 || reinterpret_cast<std::uintptr_t>(p) % mem_align_ == 0) {
            return {};
        }
        auto* b = static_cast<DirectBounce*>(q.state());
        return b->buffer.bytes().first(std::min(len, b->buffer.bytes().size()));
    }

    int finish_write(std::uint32_t flags) noexcept {
        return (flags & USERBLK_IO_F_FUA) != 0 ? sync() : 0;
    }

    int sync() noexcept {
        while (::fdatasync(fd_.get()) < 0) {
            if (errno != EINTR) {
                return -errno;
            }
        }
        return 0;
    }

    /// fallocate(mode) over the range; -EOPNOTSUPP once the file system refused mode (remembered
    /// in supported, so it is asked once).
    int fallocate_range(int mode, std::uint64_t off, std::uint64_t len,
                        std::atomic<bool>& supported) noexcept {
        if (len == 0) {
            return 0;
        }
        if (!supported.load(std::memory_order_relaxed)) {
            return -EOPNOTSUPP;
        }
        while (::fallocate(fd_.get(), mode, static_cast<off_t>(off), static_cast<off_t>(len)) < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EOPNOTSUPP) {
                supported.store(false, std::memory_order_relaxed);
            }
            return -errno;
        }
        return 0;
    }

    unique_fd fd_;
    std::uint64_t size_;
    std::uint32_t mem_align_;    ///< direct=1: memory alignment for direct I/O; 0: buffered
    std::uint32_t max_io_bytes_; ///< the bounce buffer's size
    std::atomic<bool> punch_ok_{true};
    std::atomic<bool> zero_ok_{true};
};

struct DirectAlign {
    std::uint32_t offset; ///< file offsets and lengths
    std::uint32_t memory; ///< buffer addresses
};

/// What direct I/O on fd must be aligned to (statx STATX_DIOALIGN, Linux 6.1); 512 each where
/// the file system does not say (the logical block of nearly every disk).
DirectAlign direct_io_alignment(int fd) noexcept {
    struct statx sx {};
    if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN) != 0 && sx.stx_dio_offset_align != 0) {
        return {sx.stx_dio_offset_align, std::max<std::uint32_t>(sx.stx_dio_mem_align, 1)};
    }
    return {512, 512};
}

} // namespace

void describe_file_backend(Capabilities& caps) {
    caps.set_flag("native_pipe", true);
    caps.set("storage", "a regular file through the page cache; created if missing, extended "
                        "sparse to the device size, never shrunk");
    caps.set_flag("flush", true);
    caps.set("fua", "fdatasync after the write");
    caps.set_flag("discard", true);
    caps.set("discard_effect", "punches a hole (reads as zeros); EOPNOTSUPP where the file "
                               "system cannot");
    caps.set_flag("write_zeroes", true);
    caps.set("write_zeroes_method", "fallocate ZERO_RANGE, else PUNCH_HOLE, else zero writes");
    caps.set("pipe_path", "splice");
    caps.set("direct", "direct=1: opened O_DIRECT, no page cache (a file system that takes it: "
                       "ext4, xfs; not tmpfs); the block size a multiple of its direct-I/O "
                       "alignment; unaligned buffers bounced");
    caps.set("locking", "none");
    caps.set_flag("multi_conn", true); // one page cache; fdatasync covers every queue's writes
}

Result<std::unique_ptr<Backend>> make_file_backend(const BackendConfig& cfg) {
    if (Status st = check_options("file", cfg.options, kFileOptions); !st.ok()) {
        return st;
    }
    std::string path = option_string(cfg.options, "path", "");
    if (path.empty()) {
        return Status::from_errno(EINVAL, "file: no path",
                                  "give the backing file as --backend file:path=FILE");
    }
    if (path.front() != '/') {
        // A daemon runs in / (userblk add --daemon): a relative path would name another file.
        return Status::from_errno(EINVAL, "file: path= must be absolute",
                                  "got '" + path + "'; the daemon runs in /");
    }
    const std::string what = "file: cannot use " + path;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode)) {
            return Status::from_errno(EISDIR, what, "path= must name a regular file");
        }
        const char* kind = S_ISBLK(st.st_mode)   ? "it is a block device"
                           : S_ISCHR(st.st_mode) ? "it is a character device"
                                                 : "it is not a regular file";
        return Status::from_errno(EINVAL, what,
                                  std::string(kind) + "; path= must name a regular file");
    }
    auto direct = option_number("file", cfg.options, "direct", 0, 0, 1);
    if (!direct.ok()) {
        return direct.status();
    }
    const bool is_direct = direct.value() != 0;
    unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | (is_direct ? O_DIRECT : 0),
                        0644));
    if (!fd.valid()) {
        if (is_direct && errno == EINVAL) {
            return Status::from_errno(errno, "file: cannot open " + path + " with O_DIRECT",
                                      "its file system does not take direct I/O (tmpfs does "
                                      "not); put it on ext4 or xfs, or drop direct=1");
        }
        return Status::from_errno(errno, "file: cannot open " + path);
    }
    if (::fstat(fd.get(), &st) < 0) {
        return Status::from_errno(errno, "file: cannot stat " + path);
    }
    if (!S_ISREG(st.st_mode)) { // replaced between stat() and open()
        return Status::from_errno(EINVAL, what, "path= must name a regular file");
    }
    if (static_cast<std::uint64_t>(st.st_size) < cfg.size &&
        ::ftruncate(fd.get(), static_cast<off_t>(cfg.size)) < 0) {
        return Status::from_errno(errno, "file: cannot extend " + path + " to " +
                                             std::to_string(cfg.size) + " bytes (" +
                                             format_size(cfg.size) + ")");
    }
    std::uint32_t mem_align = 0;
    if (is_direct) {
        auto align = direct_io_alignment(fd.get());
        if (cfg.block_size % align.offset != 0) {
            return Status::from_errno(
                EINVAL, "file: direct=1 over " + path,
                "its file system takes direct I/O in multiples of " + std::to_string(align.offset) +
                    " bytes; the device's block size " + std::to_string(cfg.block_size) +
                    " is not one (--block-size " + std::to_string(align.offset) + ")");
        }
        mem_align = align.memory;
    }
    auto backend = std::make_unique<FileBackend>(std::move(fd), cfg.size, mem_align,
                                                 std::max<std::uint32_t>(cfg.max_io_bytes,
                                                                         USERBLK_MAX_IO_BYTES));
    backend->probe_punch(std::max(static_cast<std::uint64_t>(st.st_size), cfg.size));
    return std::unique_ptr<Backend>(std::move(backend));
}

} // namespace userblk
