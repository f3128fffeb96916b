// A device of Linux's nbd driver as the nbd baseline and the nbdkit reference set it up
// (kernel.h drives the driver itself): the settings for a DeviceConfig, the flags handed to the
// driver, what the device is, and the capability lines both describe.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/capabilities.h"
#include "core/config.h"
#include "core/status.h"
#include "kernel.h"
#include "protocol.h"

namespace userblk {

/// `userblk del --transport nbd|nbdkit ID` (the registry's remove hook): nbd::remove_device().
Status remove_nbd_device(std::uint32_t id);

namespace nbd {

/// How long the handshake over one socket may take (SO_RCVTIMEO/SO_SNDTIMEO, cleared after).
inline constexpr std::uint32_t kHandshakeTimeoutMs = 30000;

/// The driver's settings for cfg, checked: block size (512..4096, a power of 2), size (a
/// multiple of it), largest request (--max-io, default 512K as userblk.ko, at most 32M), timeout
/// (timeout_seconds()); flags are left 0. Errors start with who.
Result<KernelSetup> kernel_setup(const DeviceConfig& cfg, std::string_view who);

/// The capability lines nbd and nbdkit share: the kernel side (kernel=nbd, module, device,
/// setup, connections, sockets, queue depth, features, timeout, delete, daemon_death).
void describe_kernel_side(Capabilities& caps);

/// What a device set up as setup on dev, for cfg, is (DeviceInfo of nbd and nbdkit).
DeviceInfo device_info(const KernelDevice& dev, const DeviceConfig& cfg, const KernelSetup& setup);

/// NBD_SET_TIMEOUT's whole seconds for a request timeout in ms: rounded up; 0 gives 30 s, as
/// userblk.ko's default.
std::uint32_t timeout_seconds(std::uint32_t timeout_ms) noexcept;

/// The transmission flags handed to the driver: what the server offered (server_flags), keeping
/// only what the device's USERBLK_F_* features ask for (flush: SEND_FLUSH and SEND_FUA, discard:
/// SEND_TRIM, write-zeroes: SEND_WRITE_ZEROES), plus READ_ONLY (the server's or the feature's)
/// and CAN_MULTI_CONN. So nbd and nbdkit devices offer the block layer what a userblk device
/// with the same --features does, whatever the server could do.
std::uint16_t kernel_flags(std::uint16_t server_flags, std::uint64_t features) noexcept;

} // namespace nbd
} // namespace userblk
