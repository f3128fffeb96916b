#include "kernel.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include <fcntl.h>
#include <linux/nbd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "core/system.h"

namespace userblk::nbd {

namespace {

std::optional<std::string> read_attribute(const std::string& path) {
    std::ifstream f(path);
    if (!f) {
        return std::nullopt;
    }
    std::string value;
    std::getline(f, value);
    return value;
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

/// N of "nbd<N>", or nullopt.
std::optional<unsigned> nbd_index(std::string_view name) {
    if (!name.starts_with("nbd") || name.size() == 3) {
        return std::nullopt;
    }
    unsigned n = 0;
    auto [p, ec] = std::from_chars(name.data() + 3, name.data() + name.size(), n);
    if (ec != std::errc() || p != name.data() + name.size()) {
        return std::nullopt;
    }
    return n;
}

std::string sys_block_dir(unsigned index) {
    return "/sys/block/nbd" + std::to_string(index);
}

} // namespace

ModuleSpec module_spec() {
    return {.name = "nbd",
            .params = {"nbds_max=" + std::to_string(kNbdsMax), "max_part=0"},
            .built = {},
            .ready_path = "/dev/nbd0",
            .hint = {}};
}

std::optional<unsigned> find_free_device(const std::string& sys_block, unsigned from) {
    std::vector<unsigned> found;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(sys_block, ec)) {
        if (auto n = nbd_index(entry.path().filename().string()); n && *n >= from) {
            found.push_back(*n);
        }
    }
    std::sort(found.begin(), found.end());
    for (unsigned n : found) {
        std::string dir = sys_block + "/nbd" + std::to_string(n);
        if (!exists(dir + "/pid") && read_attribute(dir + "/size") == "0") {
            return n;
        }
    }
    return std::nullopt;
}

// --- setup ---------------------------------------------------------------------------------------

KernelDevice::KernelDevice(unique_fd fd, unsigned index, std::string who)
    : fd_(std::move(fd)), index_(index), path_("/dev/nbd" + std::to_string(index)),
      who_(std::move(who)) {}

KernelDevice::~KernelDevice() {
    (void)release();
}

Result<std::unique_ptr<KernelDevice>> KernelDevice::attach(std::vector<unique_fd> sockets,
                                                           const KernelSetup& setup,
                                                           std::string_view who_view) {
    const std::string who(who_view);
    if (sockets.empty()) {
        return Status::from_errno(EINVAL, who + ": no connection to hand to the nbd driver");
    }
    if (setup.size == 0 || setup.block_size == 0 || setup.size % setup.block_size != 0) {
        return Status::from_errno(EINVAL, who + ": size " + std::to_string(setup.size),
                                  "not a multiple of the block size " +
                                      std::to_string(setup.block_size));
    }
    if (setup.max_io_bytes < 4096 || setup.max_io_bytes % 1024 != 0 ||
        setup.max_io_bytes > kKernelMaxIo) {
        return Status::from_errno(
            EINVAL, who + ": largest request " + std::to_string(setup.max_io_bytes) + " bytes",
            "the nbd driver takes whole KiB from 4K to 32M (--max-io)");
    }
    if (Status st = load_module(module_spec()); !st.ok()) {
        return Status::from_errno(st.error_number(), who + ": the nbd driver", st.message());
    }

    unique_fd fd;
    unsigned index = 0;
    for (unsigned from = 0;; from = index + 1) {
        auto free = find_free_device("/sys/block", from);
        if (!free) {
            return Status::from_errno(ENOSPC, who + ": no free nbd device",
                                      "every /dev/nbdN is connected or being set up; the module "
                                      "makes nbds_max of them at load time (rmmod nbd; modprobe "
                                      "nbd nbds_max=N)");
        }
        index = *free;
        std::string path = "/dev/nbd" + std::to_string(index);
        fd.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
        if (!fd.valid()) {
            return Status::from_errno(errno, who + ": cannot open " + path);
        }
        if (::ioctl(fd.get(), NBD_SET_SOCK, static_cast<unsigned long>(sockets[0].get())) == 0) {
            break;
        }
        if (errno != EBUSY) {
            return Status::from_errno(errno, who + ": NBD_SET_SOCK on " + path + " failed");
        }
        // Another process is setting this one up: try the next.
    }
    std::unique_ptr<KernelDevice> dev(new KernelDevice(std::move(fd), index, who));
    dev->size_ = setup.size;
    auto fail = [&](const std::string& step) -> Result<std::unique_ptr<KernelDevice>> {
        int err = errno;
        (void)dev->release();
        return Status::from_errno(err, who + ": " + step + " on /dev/nbd" + std::to_string(index) +
                                           " failed");
    };
    const int dfd = dev->fd_.get();
    for (std::size_t i = 1; i < sockets.size(); ++i) {
        if (::ioctl(dfd, NBD_SET_SOCK, static_cast<unsigned long>(sockets[i].get())) != 0) {
            return fail("NBD_SET_SOCK of connection " + std::to_string(i));
        }
    }
    if (::ioctl(dfd, NBD_SET_BLKSIZE, static_cast<unsigned long>(setup.block_size)) != 0) {
        return fail("NBD_SET_BLKSIZE " + std::to_string(setup.block_size));
    }
    if (::ioctl(dfd, NBD_SET_SIZE_BLOCKS,
                static_cast<unsigned long>(setup.size / setup.block_size)) != 0) {
        return fail("NBD_SET_SIZE_BLOCKS");
    }
    if (::ioctl(dfd, NBD_SET_FLAGS, static_cast<unsigned long>(setup.flags)) != 0) {
        return fail("NBD_SET_FLAGS");
    }
    if (::ioctl(dfd, NBD_SET_TIMEOUT, static_cast<unsigned long>(std::max(1U, setup.timeout_s))) !=
        0) {
        return fail("NBD_SET_TIMEOUT");
    }
    if (Status st = write_attribute(sys_block_dir(index) + "/queue/max_sectors_kb",
                                               std::to_string(setup.max_io_bytes / 1024));
        !st.ok()) {
        (void)dev->release();
        return Status::from_errno(st.error_number(), who + ": cannot limit requests", st.message());
    }
    // The driver's tag set is kKernelQueueDepth per connection; --depth lowers the block layer's
    // share of it, as a userblk.ko device's depth does.
    if (setup.depth < kKernelQueueDepth) {
        if (Status st = write_attribute(sys_block_dir(index) + "/queue/nr_requests",
                                                   std::to_string(setup.depth));
            !st.ok()) {
            (void)dev->release();
            return Status::from_errno(st.error_number(), who + ": cannot set the depth",
                                      st.message());
        }
    }
    return dev; // the driver holds the sockets now; our descriptors close here
}

// --- running -------------------------------------------------------------------------------------

bool KernelDevice::ended() {
    std::lock_guard lock(mutex_);
    return ended_;
}

Status KernelDevice::start(unsigned timeout_ms) {
    if (!fd_.valid() || waiter_.joinable()) {
        return Status::from_errno(EINVAL, who_ + ": " + path_ + " cannot be started",
                                  fd_.valid() ? "it runs already" : "it was released");
    }
    const pid_t parent = ::getpid();
    const int fd = fd_.get();
    pid_t pid = ::fork();
    if (pid < 0) {
        return Status::from_errno(errno, who_ + ": cannot fork the NBD_DO_IT process");
    }
    if (pid == 0) {
        // The holder of NBD_DO_IT: system calls only (the parent has other threads). It dies
        // with the thread that forked it (the daemon's serving thread), which interrupts
        // NBD_DO_IT: the driver then fails every request in flight at once. No signal but
        // SIGKILL and SIGSTOP reaches it, and it keeps only the device's descriptor, so the
        // daemon's sockets close when the daemon does.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) {
            ::_exit(ESRCH);
        }
        sigset_t all;
        sigfillset(&all);
        ::sigprocmask(SIG_SETMASK, &all, nullptr);
        if (fd > 0) {
            ::close_range(0, static_cast<unsigned>(fd - 1), 0);
        }
        ::close_range(static_cast<unsigned>(fd + 1), ~0U, 0);
        int r = ::ioctl(fd, NBD_DO_IT);
        ::_exit(r < 0 ? errno : 0);
    }
    child_ = pid;
    try {
        waiter_ = std::thread([this, pid] {
            int status = 0;
            while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            {
                std::lock_guard lock(mutex_);
                ended_ = true;
                status_ = status;
            }
            cv_.notify_all();
        });
    } catch (const std::system_error& e) {
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        child_ = -1;
        return Status::from_errno(e.code().value(), who_ + ": cannot start a thread");
    }
    const std::string sectors = std::to_string(size_ / 512);
    const std::string dir = sys_block_dir(index_);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
        if (ended()) {
            std::string why = end_reason();
            return Status::from_errno(EIO, who_ + ": " + path_ + " did not start",
                                      why.empty() ? "NBD_DO_IT returned at once" : why);
        }
        if (exists(dir + "/pid") && read_attribute(dir + "/size") == sectors) {
            return {};
        }
        if (std::chrono::steady_clock::now() > deadline) {
            return Status::from_errno(ETIMEDOUT, who_ + ": " + path_ + " did not show its size",
                                      "waited " + std::to_string(timeout_ms) + " ms for " + dir +
                                          "/size to read " + sectors);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

bool KernelDevice::wait(std::stop_token stop) {
    std::unique_lock lock(mutex_);
    return cv_.wait(lock, stop, [this] { return ended_; });
}

bool KernelDevice::stop(std::chrono::milliseconds grace) {
    if (!waiter_.joinable() || ended()) {
        return true;
    }
    auto wait_for = [&] {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, grace, [this] { return ended_; });
    };
    if (::ioctl(fd_.get(), NBD_DISCONNECT) != 0) {
        log_error("%s: NBD_DISCONNECT on %s failed: %s", who_.c_str(), path_.c_str(),
                  std::strerror(errno));
    }
    if (wait_for()) {
        return true;
    }
    log_error("%s: %s still connected %lld ms after NBD_DISCONNECT; shutting its sockets down "
              "(NBD_CLEAR_SOCK)",
              who_.c_str(), path_.c_str(), static_cast<long long>(grace.count()));
    ::ioctl(fd_.get(), NBD_CLEAR_SOCK);
    if (wait_for()) {
        return true;
    }
    log_error("%s: NBD_DO_IT on %s does not return; killing its process", who_.c_str(),
              path_.c_str());
    ::kill(child_, SIGKILL); // interrupts NBD_DO_IT: the driver shuts everything down
    return wait_for();
}

std::string KernelDevice::end_reason() {
    std::lock_guard lock(mutex_);
    if (!ended_) {
        return {};
    }
    if (WIFSIGNALED(status_)) {
        return "the NBD_DO_IT process was killed by signal " + std::to_string(WTERMSIG(status_)) +
               " (" + strsignal(WTERMSIG(status_)) + ")";
    }
    int err = WIFEXITED(status_) ? WEXITSTATUS(status_) : 0;
    return err == 0 ? std::string() : std::string("NBD_DO_IT: ") + std::strerror(err);
}

Status KernelDevice::release() {
    Status st;
    if (waiter_.joinable()) {
        if (!stop(std::chrono::milliseconds(5000))) {
            st = Status::from_errno(EBUSY, who_ + ": " + path_ + " could not be disconnected");
            ::kill(child_, SIGKILL);
        }
        waiter_.join(); // the child is gone or killed: waitpid() returns
        child_ = -1;
    }
    if (fd_.valid()) {
        // Fails what is still in flight and frees the device for the next user.
        ::ioctl(fd_.get(), NBD_CLEAR_SOCK);
        fd_.reset();
    }
    return st;
}

// --- userblk del ---------------------------------------------------------------------------------

Status remove_device(std::uint32_t index) {
    const std::string path = "/dev/nbd" + std::to_string(index);
    if (!exists(sys_block_dir(index))) {
        return Status::from_errno(ENODEV, "cannot delete " + path,
                                  exists("/sys/module/nbd") ? "there is no such nbd device"
                                                            : "the nbd driver is not loaded");
    }
    const std::string pid = sys_block_dir(index) + "/pid";
    if (!exists(pid)) {
        return {}; // not connected: nothing to delete
    }
    {
        // Closed before waiting: an open descriptor holds the device's configuration, and its
        // pid attribute, alive.
        unique_fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
        if (!fd) {
            return Status::from_errno(errno, "cannot open " + path);
        }
        if (::ioctl(fd.get(), NBD_DISCONNECT) != 0) {
            return Status::from_errno(errno, "NBD_DISCONNECT on " + path + " failed");
        }
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (exists(pid)) {
        if (std::chrono::steady_clock::now() > deadline) {
            log_error("%s is still connected 10 s after NBD_DISCONNECT; shutting its sockets "
                      "down (NBD_CLEAR_SOCK)",
                      path.c_str());
            unique_fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
            if (!fd || ::ioctl(fd.get(), NBD_CLEAR_SOCK) != 0) {
                return Status::from_errno(errno, "NBD_CLEAR_SOCK on " + path + " failed");
            }
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return {};
}

} // namespace userblk::nbd
