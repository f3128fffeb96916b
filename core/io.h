// Running one request against a backend: shared by every transport's serve loop.
#pragma once

#include <cstdint>
#include <span>

#include <uapi/userblk.h>

#include "backend.h"

namespace userblk {

/// True when [off, off+len) lies within a device of size bytes (no overflow).
constexpr bool range_ok(std::uint64_t off, std::uint64_t len, std::uint64_t size) noexcept {
    return len <= size && off <= size - len;
}

/// Counts len bytes of request data in the daemon's memory (QueueStats::user_data_bytes): the one
/// place they are counted, called by execute() and by the pipe adapter (core/backend.h).
inline void count_user_data(BackendQueue& q, std::uint64_t len) noexcept {
    q.stats().user_data_bytes.add(len);
}

/// Runs one request on backend for queue q and counts it in q.stats() (op, bytes, errors, and
/// the data in the daemon's memory: a WRITE's that it was given, a READ's that it read).
/// data is the destination of a READ or the source of a WRITE and must be desc.len bytes; it is
/// ignored for other ops. The op and range are checked first (unknown op: -EOPNOTSUPP; range
/// past the end or data of the wrong size: -EINVAL). Returns the completion result: 0 or -errno.
int execute(Backend& backend, BackendQueue& q, const userblk_io_desc& desc,
            std::span<std::byte> data) noexcept;

/// As execute(), for transports that move data through a pipe: a READ's data is written into
/// pipe_fd, a WRITE's data is taken from pipe_fd (Backend::read_to_pipe / write_from_pipe).
int execute_pipe(Backend& backend, BackendQueue& q, const userblk_io_desc& desc,
                 int pipe_fd) noexcept;

/// pread()s or pwrite()s (write) all of buf at off of fd, retrying short transfers and EINTR.
/// Returns 0, -EIO if the file ended first, or -errno. *calls, if given, counts the syscalls.
int pio_exact(int fd, std::span<std::byte> buf, std::uint64_t off, bool write,
              std::uint64_t* calls = nullptr) noexcept;

} // namespace userblk
