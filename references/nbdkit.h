// The nbdkit reference: Debian's nbdkit behind the same kernel nbd device as the nbd baseline
// (nbd/device.h), its memory plugin for the ram backend and its null plugin for null, started
// by the daemon on a socket of its own (socket activation).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/transport.h"

namespace userblk {

/// Its registry entry.
extern const TransportEntry transport_entry_nbdkit;

namespace nbd {

/// The plugin nbdkit runs for a backend name: ram -> memory, null -> null; nullopt otherwise.
std::optional<std::string_view> nbdkit_plugin(std::string_view backend) noexcept;

/// The nbdkit command line for backend (a registry name) of size bytes, for socket activation
/// (the listening socket is fd 3): {"nbdkit", "--foreground", "--exit-with-parent", "memory",
/// "size=N", "allocator=malloc"} or {..., "null", "size=N"}. EINVAL naming the two backends it
/// serves for any other.
Result<std::vector<std::string>> nbdkit_command(std::string_view backend, std::uint64_t size);

} // namespace nbd
} // namespace userblk
