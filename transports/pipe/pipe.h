// The pipe transport (USERBLK_MODE_PIPE): descriptors and completions on the queue fd as in copy,
// without inline data; each tag's data travels in a pipe of its own, registered with the kernel
// (USERBLK_IOC_PIPE_SET). The kernel writes a WRITE's data into the tag's pipe as read() hands out
// the descriptor, and takes a READ's data out of it as write() applies the completion; the
// backend reads or fills the pipe, by splice when it has a native pipe path (file, forward), so
// the data never enters the daemon's memory, or through the shared adapter otherwise.
//
// Cost: a pipe per tag, two fds each: a device of Q queues x D depth needs 2*Q*D + Q fds in the
// daemon (plus 2*Q*D files the kernel opens on the same pipes), and pipe buffers of up to
// max_io_bytes per tag while data is in flight.
#pragma once

#include <memory>

#include "core/transport.h"

namespace userblk {

/// Its registry entry.
extern const TransportEntry transport_entry_pipe;

/// The fds the daemon holds for a pipe device of queues x depth: two per tag plus the queue fd.
constexpr std::size_t pipe_transport_fds(std::size_t queues, std::size_t depth) noexcept {
    return queues * (2 * depth + 1);
}

} // namespace userblk
