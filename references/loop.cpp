// loop over a tmpfs file: the kernel's own way to serve a block device from a file, the reference
// for the file backend. Set up without losetup: LOOP_CTL_GET_FREE on /dev/loop-control, then
// LOOP_CONFIGURE on /dev/loopN (LOOP_SET_FD and LOOP_SET_STATUS64 on kernels before 5.8) with
// LO_FLAGS_AUTOCLEAR and without LO_FLAGS_DIRECT_IO (buffered: tmpfs has no direct I/O; its page
// cache is the storage). The backing file is made in the first of /dev/shm and /tmp that is a
// tmpfs (checked with statfs), as large as the device (sparse), and unlinked as soon as the loop
// device holds it: nothing is left behind, even when the daemon is killed (autoclear detaches
// the device when its last opener, the daemon, closes it, and that frees the file's memory).
// destroy() is LOOP_CLR_FD and close(). One hardware queue of the module's hw_queue_depth.
#include <fcntl.h>
#include <linux/loop.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "core/module.h"
#include "core/capabilities.h"
#include "core/unique_fd.h"
#include "reference.h"

namespace userblk {
namespace {

constexpr const char* kControl = "/dev/loop-control";
constexpr std::uint32_t kDefaultMaxIo = 512 * 1024; // userblk.ko's default, for equal splits
constexpr const char* kTmpfsDirs[] = {"/dev/shm", "/tmp"};

std::uint64_t read_number(const std::string& path, std::uint64_t fallback) {
    std::ifstream f(path);
    std::uint64_t v = 0;
    return (f >> v) ? v : fallback;
}

class Loop final : public reference::KernelReference {
public:
    ~Loop() override { (void)destroy(); }

    Status create(const DeviceConfig& cfg, Backend* /*backend*/) override {
        const std::uint32_t bs = cfg.block_size;
        if (bs < 512 || bs > 4096 || (bs & (bs - 1)) != 0) {
            return Status::from_errno(EINVAL, "loop: block size " + std::to_string(bs),
                                      "loop takes 512, 1024, 2048 or 4096");
        }
        if (cfg.size == 0 || cfg.size % bs != 0) {
            return Status::from_errno(EINVAL, "loop: size " + std::to_string(cfg.size),
                                      "not a positive multiple of the block size");
        }
        std::uint32_t max_io = cfg.max_io_bytes != 0 ? cfg.max_io_bytes : kDefaultMaxIo;
        if (max_io < 4096 || max_io % 1024 != 0) {
            return Status::from_errno(EINVAL, "loop: --max-io " + std::to_string(max_io),
                                      "whole KiB, at least 4K");
        }
        if (cfg.queue_depth == 0) {
            return Status::from_errno(EINVAL, "loop: depth 0", "at least 1 request");
        }
        std::string dir = tmpfs_dir();
        if (dir.empty()) {
            return Status::from_errno(ENOTSUP, "loop: no tmpfs for the backing file",
                                      "neither /dev/shm nor /tmp is a tmpfs");
        }
        // A sparse file: refuse a device the tmpfs could not hold once written, rather than fail
        // writes with ENOSPC in the middle of a run.
        if (struct statfs sf{}; ::statfs(dir.c_str(), &sf) == 0 &&
                                static_cast<std::uint64_t>(sf.f_bavail) * sf.f_bsize < cfg.size) {
            return Status::from_errno(
                ENOSPC,
                "loop: " + dir + " has " +
                    std::to_string(static_cast<std::uint64_t>(sf.f_bavail) * sf.f_bsize) +
                    " bytes free",
                "the device's " + std::to_string(cfg.size) + " bytes would not fit");
        }
        if (::access(kControl, F_OK) != 0) {
            if (Status st = load_module(
                    {.name = "loop", .params = {}, .built = {}, .ready_path = kControl, .hint = {}}); !st.ok()) {
                return st;
            }
        }
        std::string file = dir + "/userblk-loop-XXXXXX";
        backing_.reset(::mkostemp(file.data(), O_CLOEXEC));
        if (!backing_) {
            return Status::from_errno(errno, "loop: cannot create a backing file in " + dir);
        }
        Status st = attach(file, cfg, max_io);
        ::unlink(file.c_str()); // the loop device holds it now (or nobody needs it)
        if (!st.ok()) {
            (void)destroy();
        }
        return st;
    }

    Status destroy() override {
        Status st;
        if (dev_) {
            if (::ioctl(dev_.get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) {
                st = Status::from_errno(errno, "loop: LOOP_CLR_FD on " + info_.path + " failed");
            }
            dev_.reset(); // autoclear finishes the detach if someone else still has it open
        }
        backing_.reset();
        return st;
    }

private:
    void describe_device(Capabilities& caps) const override {
        caps.set("module", "loop");
        caps.set("setup", "LOOP_CTL_GET_FREE, LOOP_CONFIGURE (autoclear, buffered: no direct "
                          "I/O) over a sparse file in /dev/shm or /tmp, whichever is a tmpfs "
                          "(statfs); the file is unlinked once attached; queue/max_sectors_kb "
                          "from --max-io (default 512K, as userblk.ko)");
        caps.set("device", "/dev/loop<N>");
        caps.set("data", "a file on tmpfs: the kernel's file path (page cache copies through the "
                         "loop worker threads)");
        caps.set("limits",
                 "one hardware queue (--queues is ignored) of the module's hw_queue_depth "
                 "(128) tags; --depth lowers queue/nr_requests");
        caps.set("features", "read-only (LO_FLAGS_READ_ONLY); the rest is the kernel's");
    }

    static std::string tmpfs_dir() {
        for (const char* d : kTmpfsDirs) {
            struct statfs sf {};
            if (::statfs(d, &sf) == 0 && static_cast<unsigned long>(sf.f_type) == TMPFS_MAGIC) {
                return d;
            }
        }
        return {};
    }

    Status attach(const std::string& file, const DeviceConfig& cfg, std::uint32_t max_io) {
        if (::ftruncate(backing_.get(), static_cast<off_t>(cfg.size)) != 0) {
            return Status::from_errno(errno, "loop: cannot size " + file + " to " +
                                                 std::to_string(cfg.size) + " bytes");
        }
        unique_fd control(::open(kControl, O_RDWR | O_CLOEXEC));
        if (!control) {
            return Status::from_errno(errno, std::string("loop: cannot open ") + kControl);
        }
        for (int attempt = 0; attempt < 16; ++attempt) {
            int n = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
            if (n < 0) {
                return Status::from_errno(errno, "loop: LOOP_CTL_GET_FREE failed");
            }
            std::string path = "/dev/loop" + std::to_string(n);
            if (Status st = wait_for_path(path, 5000); !st.ok()) {
                return st;
            }
            dev_.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
            if (!dev_) {
                return Status::from_errno(errno, "loop: cannot open " + path);
            }
            int err = configure(cfg.block_size, (cfg.features & USERBLK_F_READ_ONLY) != 0);
            if (err == EBUSY) {
                dev_.reset(); // taken by someone else in between: ask again
                continue;
            }
            if (err != 0) {
                dev_.reset();
                return Status::from_errno(err, "loop: cannot attach " + file + " to " + path);
            }
            info_.id = static_cast<std::uint32_t>(n);
            info_.path = path;
            break;
        }
        if (!dev_) {
            return Status::from_errno(EBUSY, "loop: every free loop device was taken first");
        }
        const std::string sys = "/sys/block/loop" + std::to_string(info_.id);
        std::uint64_t hw_kb = read_number(sys + "/queue/max_hw_sectors_kb", max_io / 1024);
        info_.max_io_bytes =
            static_cast<std::uint32_t>(std::min<std::uint64_t>(max_io / 1024, hw_kb) * 1024);
        if (Status st = write_attribute(sys + "/queue/max_sectors_kb",
                                                   std::to_string(info_.max_io_bytes / 1024));
            !st.ok()) {
            return st;
        }
        info_.size = cfg.size;
        info_.block_size = cfg.block_size;
        info_.nr_queues = 1;
        // The module's hw_queue_depth tags; --depth lowers the block layer's share, as on a
        // userblk.ko device.
        const auto hw_depth = static_cast<std::uint32_t>(
            read_number("/sys/module/loop/parameters/hw_queue_depth", 128));
        info_.queue_depth = std::min(cfg.queue_depth, hw_depth);
        if (info_.queue_depth < hw_depth) {
            if (Status st = write_attribute(sys + "/queue/nr_requests",
                                                       std::to_string(info_.queue_depth));
                !st.ok()) {
                return st;
            }
        }
        info_.features = cfg.features & USERBLK_F_READ_ONLY;
        return {};
    }

    /// LOOP_CONFIGURE, or LOOP_SET_FD and LOOP_SET_STATUS64 where it is missing. 0 or an errno.
    int configure(std::uint32_t block_size, bool read_only) {
        const __u32 flags = static_cast<__u32>(LO_FLAGS_AUTOCLEAR) |
                            (read_only ? static_cast<__u32>(LO_FLAGS_READ_ONLY) : 0U);
        loop_config lc{};
        lc.fd = static_cast<__u32>(backing_.get());
        lc.block_size = block_size;
        lc.info.lo_flags = flags;
        if (::ioctl(dev_.get(), LOOP_CONFIGURE, &lc) == 0) {
            return 0;
        }
        if (errno != ENOTTY && errno != EINVAL) {
            return errno;
        }
        if (::ioctl(dev_.get(), LOOP_SET_FD, backing_.get()) != 0) {
            return errno;
        }
        loop_info64 li{};
        li.lo_flags = flags; // LOOP_SET_STATUS64 ignores READ_ONLY: LOOP_SET_FD decides
        if (::ioctl(dev_.get(), LOOP_SET_STATUS64, &li) != 0 ||
            ::ioctl(dev_.get(), LOOP_SET_BLOCK_SIZE, static_cast<unsigned long>(block_size)) != 0) {
            int err = errno;
            ::ioctl(dev_.get(), LOOP_CLR_FD, 0);
            return err;
        }
        return 0;
    }

    unique_fd backing_;
    unique_fd dev_;
};

} // namespace

const TransportEntry transport_entry_loop{
    .name = "loop",
    .kind = TransportKind::reference,
    .summary = "reference: the kernel's loop device over a file on tmpfs (the kernel serving a file)",
    .make = &make_transport<Loop>,
    .backends = BackendUse::none,
};

} // namespace userblk
