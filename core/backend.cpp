#include "backend.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <string>

#include <poll.h>
#include <unistd.h>

#include "config.h"
#include "io.h"

namespace userblk {

Result<BackendQueue> BackendQueue::open(Backend& backend, unsigned id, std::uint32_t max_io_bytes,
                                        QueueStats& stats) {
    std::string what = "backend queue " + std::to_string(id) + " adapter buffer";
    auto buffer = Mapping::anonymous(max_io_bytes, true, what);
    if (!buffer.ok()) {
        return buffer.status();
    }
    BackendQueue q(id, stats, std::move(buffer).value());
    Status st = backend.init_queue(q);
    if (!st.ok()) {
        return st;
    }
    return q;
}

std::uint64_t default_features(const BackendServes& s) noexcept {
    std::uint64_t f = 0;
    if (!s.write) {
        return USERBLK_F_READ_ONLY; // nothing else has a meaning on a read-only device
    }
    if (s.cache) {
        f |= USERBLK_F_FLUSH | USERBLK_F_FUA;
    }
    if (s.discard) {
        f |= USERBLK_F_DISCARD;
    }
    if (s.write_zeroes) {
        f |= USERBLK_F_WRITE_ZEROES;
    }
    return f;
}

Status check_features(std::uint64_t asked, const BackendServes& s, std::string_view name) {
    std::uint64_t cannot = 0;
    if (!s.discard) {
        cannot |= USERBLK_F_DISCARD;
    }
    if (!s.write_zeroes) {
        cannot |= USERBLK_F_WRITE_ZEROES;
    }
    std::string why = "backend '" + std::string(name) + "' ";
    if (!s.write && (asked & USERBLK_F_READ_ONLY) == 0) {
        return Status::from_errno(EROFS, "--features " + format_features(asked),
                                  why + "takes no writes: the device must be read-only");
    }
    if ((asked & cannot) != 0) {
        return Status::from_errno(
            EOPNOTSUPP, "--features " + format_features(asked & cannot),
            why + "cannot serve it; it serves " + format_features(default_features(s)) +
                ", which is what a device gets without --features");
    }
    return {};
}

int Backend::flush(BackendQueue& /*q*/) noexcept {
    return 0;
}

int Backend::discard(BackendQueue& /*q*/, std::uint64_t /*off*/, std::uint64_t /*len*/) noexcept {
    return -EOPNOTSUPP;
}

int Backend::write_zeroes(BackendQueue& q, std::uint64_t off, std::uint64_t len,
                          std::uint32_t /*flags*/) noexcept {
    static const std::array<std::byte, std::size_t{64} * 1024> kZeros{};
    while (len > 0) {
        std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(len, kZeros.size()));
        int r = write(q, off, std::span<const std::byte>(kZeros.data(), chunk), 0);
        if (r < 0) {
            return r;
        }
        off += chunk;
        len -= chunk;
    }
    return 0;
}

int Backend::read_to_pipe(BackendQueue& q, int pipe_fd, std::uint64_t off,
                          std::uint32_t len) noexcept {
    return adapter_read_to_pipe(*this, q, pipe_fd, off, len);
}

int Backend::write_from_pipe(BackendQueue& q, int pipe_fd, std::uint64_t off, std::uint32_t len,
                             std::uint32_t flags) noexcept {
    return adapter_write_from_pipe(*this, q, pipe_fd, off, len, flags);
}

Status Backend::init_queue(BackendQueue& /*q*/) {
    return {};
}

void Backend::describe(Capabilities& /*caps*/) const {}

namespace {

/// Waits until fd is ready for events (a non-blocking pipe that was full or empty).
int wait_fd(BackendQueue& q, int fd, short events) noexcept {
    pollfd p{fd, events, 0};
    while (true) {
        q.stats().wait_calls.add();
        int r = ::poll(&p, 1, -1);
        if (r >= 0) {
            return 0;
        }
        if (errno != EINTR) {
            return -errno;
        }
    }
}

} // namespace

int adapter_read_to_pipe(Backend& backend, BackendQueue& q, int pipe_fd, std::uint64_t off,
                         std::uint32_t len) noexcept {
    std::span<std::byte> buf = q.buffer();
    if (len > buf.size()) {
        return -EINVAL;
    }
    buf = buf.first(len);
    int r = backend.read(q, off, buf);
    if (r < 0) {
        return r;
    }
    std::size_t done = 0;
    while (done < buf.size()) {
        ssize_t n = ::write(pipe_fd, buf.data() + done, buf.size() - done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                if (int w = wait_fd(q, pipe_fd, POLLOUT); w < 0) {
                    return w;
                }
                continue;
            }
            return -errno;
        }
        done += static_cast<std::size_t>(n);
    }
    q.stats().adapter_copied_bytes.add(len);
    count_user_data(q, len);
    return 0;
}

int adapter_write_from_pipe(Backend& backend, BackendQueue& q, int pipe_fd, std::uint64_t off,
                            std::uint32_t len, std::uint32_t flags) noexcept {
    std::span<std::byte> buf = q.buffer();
    if (len > buf.size()) {
        return -EINVAL;
    }
    buf = buf.first(len);
    std::size_t done = 0;
    while (done < buf.size()) {
        ssize_t n = ::read(pipe_fd, buf.data() + done, buf.size() - done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                if (int w = wait_fd(q, pipe_fd, POLLIN); w < 0) {
                    return w;
                }
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return -EIO; // the pipe ended before the request's data did
        }
        done += static_cast<std::size_t>(n);
    }
    int r = backend.write(q, off, buf, flags);
    if (r < 0) {
        return r;
    }
    q.stats().adapter_copied_bytes.add(len);
    count_user_data(q, len);
    return 0;
}

} // namespace userblk
