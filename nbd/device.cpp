// A device of Linux's nbd driver as the nbd baseline and the nbdkit reference set it up: the
// settings for a DeviceConfig, the flags handed to the driver, what the device is, and the
// capability lines both describe.
#include "device.h"

#include <algorithm>
#include <cerrno>

namespace userblk {

namespace nbd {

namespace {

/// The largest request userblk.ko serves by default: the same split for a fair comparison.
constexpr std::uint32_t kDefaultMaxIo = 512 * 1024;
/// Connections (queues) one device may have.
constexpr std::uint32_t kMaxConnections = 64;
} // namespace

std::uint32_t timeout_seconds(std::uint32_t timeout_ms) noexcept {
    if (timeout_ms == 0) {
        return 30;
    }
    return static_cast<std::uint32_t>((std::uint64_t{timeout_ms} + 999) / 1000);
}

Result<KernelSetup> kernel_setup(const DeviceConfig& cfg, std::string_view who_view) {
    const std::string who(who_view);
    const std::uint32_t bs = cfg.block_size;
    if (bs < 512 || bs > 4096 || (bs & (bs - 1)) != 0) {
        return Status::from_errno(EINVAL, who + ": block size " + std::to_string(bs),
                                  "the nbd driver takes 512, 1024, 2048 or 4096");
    }
    if (cfg.size == 0 || cfg.size % bs != 0) {
        return Status::from_errno(EINVAL, who + ": size " + std::to_string(cfg.size),
                                  "not a positive multiple of the block size " +
                                      std::to_string(bs));
    }
    if (cfg.nr_queues == 0 || cfg.nr_queues > kMaxConnections) {
        return Status::from_errno(EINVAL, who + ": " + std::to_string(cfg.nr_queues) + " queues",
                                  "one connection per queue, 1 to " +
                                      std::to_string(kMaxConnections));
    }
    if (cfg.queue_depth == 0) {
        return Status::from_errno(EINVAL, who + ": depth 0", "at least 1 request per queue");
    }
    KernelSetup k;
    k.depth = std::min(cfg.queue_depth, kKernelQueueDepth);
    k.size = cfg.size;
    k.block_size = bs;
    k.timeout_s = timeout_seconds(cfg.timeout_ms);
    k.max_io_bytes = cfg.max_io_bytes != 0 ? cfg.max_io_bytes : kDefaultMaxIo;
    if (k.max_io_bytes < 4096 || k.max_io_bytes % 4096 != 0 || k.max_io_bytes > kKernelMaxIo) {
        return Status::from_errno(EINVAL, who + ": --max-io " + std::to_string(k.max_io_bytes),
                                  "the nbd driver takes a multiple of 4K up to 32M");
    }
    return k;
}

DeviceInfo device_info(const KernelDevice& dev, const DeviceConfig& cfg, const KernelSetup& setup) {
    DeviceInfo info;
    info.id = dev.index();
    info.path = dev.path();
    info.size = cfg.size;
    info.block_size = cfg.block_size;
    info.nr_queues = cfg.nr_queues;
    info.queue_depth = setup.depth;
    info.max_io_bytes = setup.max_io_bytes;
    info.timeout_ms = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(std::uint64_t{setup.timeout_s} * 1000, UINT32_MAX));
    info.features = cfg.features;
    return info;
}

std::uint16_t kernel_flags(std::uint16_t server_flags, std::uint64_t features) noexcept {
    std::uint16_t keep = kFlagReadOnly | kFlagCanMultiConn;
    if ((features & USERBLK_F_FLUSH) != 0) {
        keep |= kFlagSendFlush | kFlagSendFua;
    }
    if ((features & USERBLK_F_DISCARD) != 0) {
        keep |= kFlagSendTrim;
    }
    if ((features & USERBLK_F_WRITE_ZEROES) != 0) {
        keep |= kFlagSendWriteZeroes;
    }
    std::uint16_t flags = kFlagHasFlags | (server_flags & keep);
    if ((features & USERBLK_F_READ_ONLY) != 0) {
        flags |= kFlagReadOnly;
    }
    return flags;
}

void describe_kernel_side(Capabilities& caps) {
    caps.set("kernel", "nbd");
    caps.set("module", "nbd (Linux's network block device driver, from the kernel package; "
                       "modprobe nbd nbds_max=16 max_part=0 if it is not loaded)");
    caps.set("device", "/dev/nbd<N>: the first free one (no pid attribute, size 0)");
    caps.set("setup", "handshake in user space over each socket (fixed newstyle, NBD_OPT_GO), "
                      "then the classic ioctls: NBD_SET_SOCK per connection, NBD_SET_BLKSIZE, "
                      "NBD_SET_SIZE_BLOCKS, NBD_SET_FLAGS, NBD_SET_TIMEOUT, NBD_DO_IT in a "
                      "child process (PR_SET_PDEATHSIG); queue/max_sectors_kb from --max-io "
                      "(default 512K, as userblk.ko), queue/nr_requests from --depth");
    caps.set("connections", "one per --queues, each a hardware queue of the driver; several need "
                            "a server that offers NBD_FLAG_CAN_MULTI_CONN");
    caps.set("sockets", "unix,tcp");
    caps.set_number("queue_depth", nbd::kKernelQueueDepth);
    caps.set("depth", "--depth lowers queue/nr_requests of the driver's 128 tags per queue; "
                      "more than 128 is served as 128");
    caps.set("features", "flush,discard,read-only as --features asks (flush sends FUA too); "
                         "write-zeroes is not sent by Linux 6.1's nbd (the block layer writes "
                         "zeros instead)");
    caps.set("timeout", "--timeout-ms rounded up to whole seconds (NBD_SET_TIMEOUT), default 30 "
                        "s: a request that times out fails and its connection is shut down");
    caps.set("delete", "userblk del --transport <name> <N> (NBD_DISCONNECT), or SIGTERM to the "
                       "daemon; the node /dev/nbd<N> stays, at size 0 and without a pid "
                       "attribute");
    caps.set("daemon_death", "NBD_DO_IT runs in a child process that dies with the daemon "
                             "(PR_SET_PDEATHSIG): the driver fails the requests in flight at "
                             "once and the disk reads as size 0");
    caps.set("stall", "a stopped server is caught by the request timeout: each timeout marks "
                      "its connection dead and retries the request on another, so it fails "
                      "after up to --queues timeouts; then the device ends (size 0)");
}

} // namespace nbd

Status remove_nbd_device(std::uint32_t id) {
    return nbd::remove_device(id);
}

} // namespace userblk
