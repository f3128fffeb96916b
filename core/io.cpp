#include "io.h"

#include <cerrno>

#include <unistd.h>

namespace userblk {

namespace {

/// Checks what is common to both data paths; 0 when the request may run.
int check(const Backend& backend, const userblk_io_desc& desc) noexcept {
    switch (desc.op) {
    case USERBLK_OP_FLUSH:
        return 0;
    case USERBLK_OP_READ:
    case USERBLK_OP_WRITE:
    case USERBLK_OP_DISCARD:
    case USERBLK_OP_WRITE_ZEROES:
        return range_ok(desc.offset, desc.len, backend.size()) ? 0 : -EINVAL;
    default:
        return -EOPNOTSUPP;
    }
}

int run_other(Backend& backend, BackendQueue& q, const userblk_io_desc& desc) noexcept {
    switch (desc.op) {
    case USERBLK_OP_FLUSH:
        return backend.flush(q);
    case USERBLK_OP_DISCARD:
        return backend.discard(q, desc.offset, desc.len);
    case USERBLK_OP_WRITE_ZEROES:
        return backend.write_zeroes(q, desc.offset, desc.len, desc.flags);
    default:
        return -EOPNOTSUPP;
    }
}

int finish(BackendQueue& q, const userblk_io_desc& desc, int result) noexcept {
    QueueStats& s = q.stats();
    s.count_request(desc.op, desc.op == USERBLK_OP_FLUSH ? 0 : desc.len);
    if (result < 0) {
        s.io_errors.add();
    }
    return result;
}

} // namespace

int execute(Backend& backend, BackendQueue& q, const userblk_io_desc& desc,
            std::span<std::byte> data) noexcept {
    int r = check(backend, desc);
    if (r == 0) {
        switch (desc.op) {
        case USERBLK_OP_READ:
            r = data.size() == desc.len ? backend.read(q, desc.offset, data) : -EINVAL;
            break;
        case USERBLK_OP_WRITE:
            r = data.size() == desc.len ? backend.write(q, desc.offset, data, desc.flags) : -EINVAL;
            break;
        default:
            r = run_other(backend, q, desc);
            break;
        }
    }
    // A WRITE's data was in our memory whatever became of it; a READ's only if it was read.
    if ((desc.op == USERBLK_OP_WRITE && data.size() == desc.len) ||
        (desc.op == USERBLK_OP_READ && r == 0)) {
        count_user_data(q, desc.len);
    }
    return finish(q, desc, r);
}

int execute_pipe(Backend& backend, BackendQueue& q, const userblk_io_desc& desc,
                 int pipe_fd) noexcept {
    int r = check(backend, desc);
    if (r == 0) {
        switch (desc.op) {
        case USERBLK_OP_READ:
            r = backend.read_to_pipe(q, pipe_fd, desc.offset, desc.len);
            break;
        case USERBLK_OP_WRITE:
            r = backend.write_from_pipe(q, pipe_fd, desc.offset, desc.len, desc.flags);
            break;
        default:
            r = run_other(backend, q, desc);
            break;
        }
    }
    return finish(q, desc, r);
}

int pio_exact(int fd, std::span<std::byte> buf, std::uint64_t off, bool write,
              std::uint64_t* calls) noexcept {
    std::size_t done = 0;
    while (done < buf.size()) {
        const auto at = static_cast<off_t>(off + done);
        ssize_t n = write ? ::pwrite(fd, buf.data() + done, buf.size() - done, at)
                          : ::pread(fd, buf.data() + done, buf.size() - done, at);
        if (calls != nullptr) {
            ++*calls;
        }
        if (n > 0) {
            done += static_cast<std::size_t>(n);
        } else if (n == 0) {
            return -EIO; // end of file, or a device that took nothing
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

} // namespace userblk
