#include "pipes.h"

#include <cerrno>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

namespace userblk {

Result<Pipe> Pipe::make(std::size_t capacity, std::string_view what) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        int err = errno;
        return Status::from_errno(err, std::string(what) + ": pipe2 failed",
                                  err == EMFILE ? "too many open files: raise ulimit -n" : "");
    }
    Pipe p{unique_fd(fds[0]), unique_fd(fds[1])};
    int have = ::fcntl(fds[1], F_GETPIPE_SZ);
    if (have >= 0 && static_cast<std::size_t>(have) >= capacity) {
        return p;
    }
    if (capacity > static_cast<std::size_t>(INT32_MAX) ||
        ::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(capacity)) < 0) {
        int err = errno;
        return Status::from_errno(
            err,
            std::string(what) + ": cannot size a pipe to " + std::to_string(capacity) + " bytes",
            err == EPERM   ? "above /proc/sys/fs/pipe-max-size for an unprivileged user"
            : err == EBUSY ? "the user's pipe memory is used up (/proc/sys/fs/pipe-user-pages-soft)"
                           : "");
    }
    return p;
}

namespace {

int wait_for(int fd, short events) noexcept {
    pollfd p{fd, events, 0};
    while (::poll(&p, 1, -1) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

} // namespace

int splice_exact(int in, loff_t* off_in, int out, loff_t* off_out, std::size_t len,
                 unsigned int flags, std::size_t* calls) noexcept {
    while (len > 0) {
        ssize_t n = ::splice(in, off_in, out, off_out, len, flags);
        if (calls != nullptr) {
            ++*calls;
        }
        if (n > 0) {
            len -= static_cast<std::size_t>(n);
            continue;
        }
        if (n == 0) {
            return -EIO; // the source ended first
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN) {
            return -errno;
        }
        // A non-blocking end is empty or full: wait for both sides to be ready.
        if (int r = wait_for(in, POLLIN); r < 0) {
            return r;
        }
        if (int r = wait_for(out, POLLOUT); r < 0) {
            return r;
        }
    }
    return 0;
}

ssize_t drain_pipe(int read_fd) noexcept {
    static const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0) {
        return -ENODEV;
    }
    ssize_t total = 0;
    while (true) {
        ssize_t n =
            ::splice(read_fd, nullptr, devnull, nullptr, std::size_t{1} << 20, SPLICE_F_NONBLOCK);
        if (n > 0) {
            total += n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n == 0 || errno == EAGAIN ? total : -errno;
    }
}

Status ensure_fd_limit(std::size_t need, std::string_view what) {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        return Status::from_errno(errno, "getrlimit(RLIMIT_NOFILE) failed");
    }
    if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur >= need) {
        return {};
    }
    if (lim.rlim_cur == RLIM_INFINITY) {
        return {};
    }
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < need) {
        return Status::from_errno(
            EMFILE, std::string(what) + " needs " + std::to_string(need) + " open files",
            "the hard limit is " + std::to_string(lim.rlim_max) +
                ": raise it (ulimit -Hn) or lower --queues/--depth");
    }
    lim.rlim_cur = need;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
        return Status::from_errno(errno,
                                  "setrlimit(RLIMIT_NOFILE, " + std::to_string(need) + ") failed");
    }
    return {};
}

} // namespace userblk
