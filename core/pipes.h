// Pipes as the pipe and splice transports use them: made non-blocking (the daemon must never
// block on a pipe it alone drains) and sized to hold a whole request.
#pragma once

#include <cstddef>
#include <string_view>

#include <sys/types.h>

#include "status.h"
#include "unique_fd.h"

namespace userblk {

struct Pipe {
    unique_fd r; ///< read end
    unique_fd w; ///< write end

    /// A close-on-exec, non-blocking pipe that holds at least capacity bytes (F_SETPIPE_SZ).
    /// what names it in the error message, which says which limit to raise.
    static Result<Pipe> make(std::size_t capacity, std::string_view what);
};

/// Moves exactly len bytes with splice(2) from in (at *off_in unless null) to out (at *off_out
/// unless null), waiting in poll() while a non-blocking pipe end is full or empty. The offsets
/// advance. Returns 0, -EIO if in ended first, or -errno. *calls counts the syscalls made.
int splice_exact(int in, loff_t* off_in, int out, loff_t* off_out, std::size_t len,
                 unsigned int flags, std::size_t* calls) noexcept;

/// Empties the read end of a non-blocking pipe (what a failed request left in it) into
/// /dev/null. Returns the bytes dropped or -errno.
ssize_t drain_pipe(int read_fd) noexcept;

/// Raises the soft RLIMIT_NOFILE to at least need (up to the hard limit). Fails with EMFILE and
/// a message naming need and the limits if the hard limit is lower.
Status ensure_fd_limit(std::size_t need, std::string_view what);

} // namespace userblk
