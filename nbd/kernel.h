// The kernel's nbd driver as the nbd and nbdkit transports drive it: through its classic ioctls
// (linux/nbd.h), the way nbd-client does, without nbd-client.
//
// Setup (attach()): load the module if it is not (`modprobe nbd nbds_max=16 max_part=0`: no
// partition scan, as userblk.ko's disks), take the first /dev/nbdN that looks free (no pid
// attribute, size 0), hand it each connection's socket (NBD_SET_SOCK; the first one claims the
// device for this thread, and a device another process is setting up answers EBUSY: the next one
// is tried), then NBD_SET_BLKSIZE, NBD_SET_SIZE_BLOCKS, NBD_SET_FLAGS (the transmission flags the
// handshake agreed on) and NBD_SET_TIMEOUT (the request timeout, whole seconds), and the
// queue's max_sectors_kb (the device's largest request, so requests are split as on userblk.ko).
// The sockets are the client ends, after the handshake was done in user space over them.
//
// Running (start()): NBD_DO_IT in a small child process of its own, which dies with the daemon
// (PR_SET_PDEATHSIG), blocks every signal and keeps no descriptor but the device's. The disk gets
// its size when NBD_DO_IT starts, and start() returns once sysfs shows it. NBD_DO_IT returns
// when every connection has ended: the server closed them (after NBD_CMD_DISC, or dying), the
// driver shut them down (each request timeout marks its connection dead and retries the request
// on another; when none is left the request fails with EIO), NBD_CLEAR_SOCK, or the process was
// interrupted (the daemon died, so the holder got SIGKILL: the driver then fails every request in
// flight at once). Why a process and not a thread: any signal that reaches the thread in
// NBD_DO_IT ends the device, and SIGSTOP cannot be blocked; a stopped daemon must be caught by
// the request timeout, as a stopped NBD server would, not end the device on the spot.
// Teardown (stop(), release()): NBD_DISCONNECT (the driver sends NBD_CMD_DISC on every
// connection; a server answers what it received before and closes), then, if DO_IT has not
// returned within the grace period, NBD_CLEAR_SOCK (the driver shuts the sockets down itself),
// then NBD_CLEAR_SOCK again once DO_IT has returned, which fails any request still in flight,
// and close(). The device then reads as size 0 and has no pid attribute; /dev/nbdN stays (the
// driver's devices are made at module load).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <sys/types.h>

#include "core/module.h"
#include "core/status.h"
#include "core/unique_fd.h"

namespace userblk::nbd {

/// nbds_max when this code loads the module (the driver's own default is 16 too).
inline constexpr unsigned kNbdsMax = 16;
/// Linux's nbd driver serves at most this many bytes per request (max_hw_sectors 65536).
inline constexpr std::uint32_t kKernelMaxIo = 32U << 20;
/// The driver's tag-set depth per hardware queue (fixed; `--depth` cannot change it).
inline constexpr std::uint32_t kKernelQueueDepth = 128;

/// What the device is set to.
struct KernelSetup {
    std::uint64_t size = 0;                  ///< bytes, a multiple of block_size
    std::uint32_t block_size = 512;          ///< NBD_SET_BLKSIZE: 512..4096, a power of 2
    std::uint16_t flags = 0;                 ///< NBD_SET_FLAGS: transmission flags
    std::uint32_t timeout_s = 30;            ///< NBD_SET_TIMEOUT: seconds, at least 1
    std::uint32_t max_io_bytes = 512 * 1024; ///< queue/max_sectors_kb * 1024
    std::uint32_t depth = 128;               ///< queue/nr_requests, at most kKernelQueueDepth
};

/// How the driver is loaded (core/module.h): `modprobe nbd nbds_max=16 max_part=0`.
ModuleSpec module_spec();

/// The index of the first nbd device at or after from that looks free in sys_block (the folder
/// of block devices, /sys/block): nbd<N> is there, has no pid attribute (no NBD_DO_IT runs) and
/// its size is 0. Devices are tried in numeric order (nbd2 before nbd10). nullopt if none.
std::optional<unsigned> find_free_device(const std::string& sys_block, unsigned from = 0);

/// One /dev/nbdN set up for our sockets. Its functions run on one thread (the transport's);
/// NBD_DO_IT runs in a child process, reaped by a thread of its own.
class KernelDevice {
public:
    /// Loads the module if needed, takes a free device and sets it up with sockets (connected,
    /// the handshake done; closed here once the driver holds them). Errors start with who:
    /// "nbd: no free nbd device: ...".
    static Result<std::unique_ptr<KernelDevice>>
    attach(std::vector<unique_fd> sockets, const KernelSetup& setup, std::string_view who);

    KernelDevice(const KernelDevice&) = delete;
    KernelDevice& operator=(const KernelDevice&) = delete;
    ~KernelDevice();

    [[nodiscard]] unsigned index() const noexcept { return index_; }
    /// /dev/nbd<index>.
    [[nodiscard]] const std::string& path() const noexcept { return path_; }

    /// Runs NBD_DO_IT in its process and waits up to timeout_ms for the disk to show its size.
    /// Call it from the thread that lives as long as the device (the holder dies with it).
    Status start(unsigned timeout_ms);
    /// Blocks until NBD_DO_IT returns (true) or stop is requested (false).
    bool wait(std::stop_token stop);
    /// Ends the device: NBD_DISCONNECT, then NBD_CLEAR_SOCK if NBD_DO_IT has not returned within
    /// grace, then SIGKILL to its process after another. True once it has returned.
    bool stop(std::chrono::milliseconds grace);
    /// Why NBD_DO_IT returned: "" while it runs or when it returned 0, else e.g. "NBD_DO_IT:
    /// Connection timed out" or "the NBD_DO_IT process was killed by signal 9 (Killed)".
    [[nodiscard]] std::string end_reason();
    /// stop() if it runs, reaps the NBD_DO_IT process, NBD_CLEAR_SOCK (fails what is still in
    /// flight), closes the device. Idempotent.
    Status release();

private:
    KernelDevice(unique_fd fd, unsigned index, std::string who);
    [[nodiscard]] bool ended();

    unique_fd fd_;
    unsigned index_;
    std::string path_;
    std::string who_;
    std::uint64_t size_ = 0;
    pid_t child_ = -1;   ///< the NBD_DO_IT process
    std::thread waiter_; ///< waitpid()s it
    std::mutex mutex_;
    std::condition_variable_any cv_;
    bool ended_ = false;
    int status_ = 0; ///< its wait status: the exit code is NBD_DO_IT's errno, 0 for success
};

/// `userblk del --transport nbd N` (and nbdkit): NBD_DISCONNECT on /dev/nbdN, then waits up to
/// 10 s for the serving process to let it go (its pid attribute disappears), else NBD_CLEAR_SOCK.
/// A device that is not connected is left alone (success); ENODEV when there is no nbdN.
Status remove_device(std::uint32_t index);

} // namespace userblk::nbd
