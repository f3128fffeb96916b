// What a device is asked to be (DeviceConfig) and what it became (DeviceInfo).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <uapi/userblk.h>

namespace userblk {

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
    std::uint32_t poll_us = 0; ///< busy-poll budget for transports that poll (µs); 0 = never
};

/// A created device: its identity and the values in force (defaults resolved).
struct DeviceInfo {
    std::uint32_t id = 0;
    std::string path; ///< the block device node, e.g. /dev/userblk0
    std::uint64_t size = 0;
    std::uint32_t block_size = 0;
    std::uint32_t nr_queues = 0;
    std::uint32_t queue_depth = 0;
    std::uint32_t max_io_bytes = 0;
    std::uint32_t timeout_ms = 0;
    std::uint64_t features = 0;
};

/// Parses a comma-separated feature list ("flush,discard,write-zeroes,read-only"; "" and "none"
/// are no feature). On an unknown name returns nullopt and stores the name in *bad if given.
std::optional<std::uint64_t> parse_features(std::string_view list, std::string* bad = nullptr);

/// The names parse_features() accepts, comma-separated.
std::string_view feature_names() noexcept;

/// A USERBLK_F_* mask as a comma-separated list ("none" for 0; unknown bits as "0x..").
std::string format_features(std::uint64_t features);

/// "copy", "ring", "pipe", "splice", or "mode<N>" for a mode this build does not know.
std::string mode_name(std::uint32_t mode);

/// "added", "live", "dead", or "state<N>".
std::string state_name(std::uint32_t state);

/// The block device node of device id: /dev/userblk<id>.
std::string disk_path(std::uint32_t id);

} // namespace userblk
