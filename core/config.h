// What a device is asked to be (DeviceConfig) and what it became (DeviceInfo).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <uapi/userblk.h>

#include "fault.h"

namespace userblk {

/// How a transport whose requests travel over a socket to an NBD server (nbd, nbdkit) connects
/// it: `--socket unix|tcp`, for the transports that list the kind in sockets= (--dump-transport).
enum class SocketKind : std::uint8_t {
    unix_stream,  ///< a UNIX stream socket (a socket pair to our own server); the default
    tcp_loopback, ///< TCP over 127.0.0.1 (TCP_NODELAY)
};

/// A device as the user asks for it; independent of how a transport sets it up.
struct DeviceConfig {
    std::uint64_t size = 0;                    ///< bytes, a multiple of block_size
    std::uint32_t block_size = 512;            ///< logical block size, 512..4096
    std::uint32_t nr_queues = 1;               ///< hardware queues, one serving thread each
    std::uint32_t queue_depth = 64;            ///< requests in flight per queue
    std::uint32_t max_io_bytes = 0;            ///< largest request; 0 selects the driver's default
    std::uint32_t timeout_ms = 0;              ///< request timeout; 0 selects the driver's default
    std::uint64_t features = 0;                ///< USERBLK_F_*
    std::uint32_t dev_id = USERBLK_DEV_ID_ANY; ///< wanted id, or any free one
    /// With USERBLK_F_RECOVERY: how long the device waits for a new daemon after its daemon
    /// went away (ms); 0 selects the driver's default.
    std::uint32_t recovery_timeout_ms = 0;
    /// Take over the recovering device dev_id (`userblk recover`) instead of adding one: its
    /// geometry is the device's; the other fields here say how to serve it.
    bool recover = false;
    std::uint32_t poll_us = 0; ///< busy-poll budget for transports that poll (µs); 0 = never
    /// Spin on the submission ring without system calls, up to spin_us µs idle before sleeping,
    /// telling the kernel when it must wake the daemon (ring; USERBLK_RING_NEED_WAKEUP); 0 = never.
    std::uint32_t spin_us = 0;
    /// Of nr_queues, the last ones are poll queues for polled I/O (ring; 0 = none).
    std::uint32_t nr_poll_queues = 0;
    /// The backend's registry name as given to --backend ("ram"), or empty. Transports that are
    /// handed a Backend object need not read it; one that serves the backend by name with a
    /// server of its own (nbdkit: Transport::own_backends()) gets no object, only this.
    std::string backend{};
    SocketKind socket = SocketKind::unix_stream; ///< for transports that talk NBD over a socket
    FaultConfig fault{}; ///< --fault: the faults the daemon injects (none by default)
};

/// A created device: its identity and the values in force (defaults resolved).
struct DeviceInfo {
    std::uint32_t id = 0;
    std::string path; ///< the block device node, e.g. /dev/userblk0
    std::uint64_t size = 0;
    std::uint32_t block_size = 0;
    std::uint32_t nr_queues = 0;
    std::uint32_t nr_poll_queues = 0; ///< of nr_queues, the last ones are poll queues
    std::uint32_t queue_depth = 0;
    std::uint32_t max_io_bytes = 0;
    std::uint32_t timeout_ms = 0;
    std::uint32_t recovery_timeout_ms = 0; ///< with USERBLK_F_RECOVERY
    std::uint64_t features = 0;
};

/// Parses a comma-separated feature list ("flush,discard,write-zeroes,read-only"; "" and "none"
/// are no feature). On an unknown name returns nullopt and stores the name in *bad if given.
std::optional<std::uint64_t> parse_features(std::string_view list, std::string* bad = nullptr);

/// The names parse_features() accepts, comma-separated.
std::string_view feature_names() noexcept;

/// A USERBLK_F_* mask as a comma-separated list ("none" for 0; unknown bits as "0x..").
std::string format_features(std::uint64_t features);

/// "unix" or "tcp" (the --socket values).
std::string_view socket_kind_name(SocketKind kind) noexcept;
/// The SocketKind of "unix" or "tcp"; nullopt for anything else.
std::optional<SocketKind> parse_socket_kind(std::string_view name) noexcept;

/// "added", "live", "dead", "recovering", or "state<N>".
std::string state_name(std::uint32_t state);

/// The block device node of device id: /dev/userblk<id>.
std::string disk_path(std::uint32_t id);

} // namespace userblk
