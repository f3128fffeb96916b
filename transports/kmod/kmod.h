// The part shared by every transport served through userblk.ko (copy, ring, pipe, splice): the
// control device and the device setup (ADD_DEV, OPEN_QUEUE, START_DEV, STOP_DEV, DEL_DEV), and one
// thread per queue. A kmod transport only supplies its mode and its per-queue serve loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include <uapi/userblk.h>

#include "core/transport.h"
#include "core/unique_fd.h"

namespace userblk {

/// The userblk control device (/dev/userblk-control). Ioctl failures come back as a Status such as
/// "ADD_DEV failed: Invalid argument (size 1000 is not a multiple of block size 512)".
class ControlDevice {
public:
    /// Opens the control device. Failure reads "cannot open /dev/userblk-control: No such file or
    /// directory (is userblk.ko loaded?)".
    static Result<ControlDevice> open(const char* path = USERBLK_CONTROL_PATH);

    /// ADD_DEV; on success cfg.dev_id holds the new id. transport, if given, names the mode in
    /// the error.
    Status add_dev(userblk_dev_config& cfg, std::string_view transport = {}) const;
    Status start_dev(std::uint32_t id) const;
    /// STOP_DEV and DEL_DEV. A device belongs to the process that added it; force
    /// (USERBLK_CTL_FORCE) acts on another process's device, as `userblk del` does.
    Status stop_dev(std::uint32_t id, bool force = false) const;
    Status del_dev(std::uint32_t id, bool force = false) const;
    /// GET_INFO; a missing device fails with ENODEV.
    [[nodiscard]] Result<userblk_dev_config> get_info(std::uint32_t id) const;
    /// OPEN_QUEUE: a new close-on-exec fd bound to queue of device id.
    [[nodiscard]] Result<unique_fd> open_queue(std::uint32_t id, std::uint16_t queue) const;
    /// RECOVER_DEV: the caller becomes the owner of a recovering device (USERBLK_F_RECOVERY).
    Status recover_dev(std::uint32_t id) const;
    /// HANDOVER_DEV: a live device with USERBLK_F_RECOVERY begins to recover now, so that its
    /// daemon lets it go (a planned upgrade); force acts on another process's device.
    Status handover_dev(std::uint32_t id, bool force = false) const;

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

private:
    explicit ControlDevice(unique_fd fd) : fd_(std::move(fd)) {}
    unique_fd fd_;
};

/// The ADD_DEV request for cfg in mode (abi_version set, reserved fields zero).
userblk_dev_config to_uapi(const DeviceConfig& cfg, std::uint32_t mode) noexcept;

/// The DeviceInfo of a GET_INFO answer.
DeviceInfo info_from_uapi(const userblk_dev_config& cfg);

/// Why ADD_DEV failed with err for cfg, as far as user space can tell from the uapi limits
/// (e.g. "size 1000 is not a multiple of block size 512"); empty when it cannot tell. transport,
/// if given, is the registry name of cfg.mode.
std::string explain_add_dev(int err, const userblk_dev_config& cfg,
                            std::string_view transport = {});

/// One hardware queue of a kmod device, as its worker sees it. Lives as long as the device.
struct KmodQueue {
    unsigned id;                 ///< queue index, 0..nr_queues-1
    int fd;                      ///< the queue fd (owned by KmodTransport)
    const DeviceInfo& device;    ///< values in force (max_io_bytes and timeout resolved)
    Backend& backend;            ///< the device's backend
    BackendQueue& backend_queue; ///< this queue's backend context
    QueueStats& stats;           ///< this queue's statistics
};

/// The per-queue serve loop of a kmod transport, run on the queue's own thread. Owns whatever the
/// loop needs (buffers, mappings), set up before the thread starts; must not refer to members of
/// the transport object.
class KmodQueueWorker {
public:
    KmodQueueWorker() = default;
    KmodQueueWorker(const KmodQueueWorker&) = delete;
    KmodQueueWorker& operator=(const KmodQueueWorker&) = delete;
    virtual ~KmodQueueWorker() = default;

    /// Serves the queue until the device ends (read() gives end of file, ENODEV) or stop is
    /// requested (both success), or a fatal error. Allocates nothing per request. Required.
    virtual Status run(std::stop_token stop) = 0;
};

/// The base of every transport served by userblk.ko. create() adds the device in mode and opens
/// its queues (with DeviceConfig::recover, it takes over the recovering device dev_id instead:
/// RECOVER_DEV, then the queues, waiting a while for the old daemon to close its own), serve() runs
/// one worker thread per queue and then START_DEV (so requests that arrive as soon as the disk
/// appears, e.g. udev's probes, are served), stop is STOP_DEV (which ends every queue's loop:
/// read() gives end of file, RING_ENTER fails with ENODEV), destroy() is DEL_DEV. A derived
/// transport supplies describe_mode() and make_worker(), and defines its registry entry
/// (TransportEntry).
class KmodTransport : public Transport {
public:
    ~KmodTransport() override;

    void describe(Capabilities& caps) const final;
    Status create(const DeviceConfig& cfg, Backend* backend) final;
    Status serve(std::stop_token stop, const ReadyFn& ready) final;
    Status destroy() final;
    [[nodiscard]] DeviceInfo info() const final { return info_; }
    [[nodiscard]] const DeviceStats* stats() const final { return stats_.get(); }

protected:
    /// entry is the transport's registry entry: its name (in messages) and userblk.ko mode.
    explicit KmodTransport(const TransportEntry& entry);

    /// Appends the capability lines of this mode (data_path=, batching=, ...). Required.
    virtual void describe_mode(Capabilities& caps) const = 0;
    /// Builds queue q's worker (buffers, mappings of q.fd) before its thread starts. Required.
    virtual Result<std::unique_ptr<KmodQueueWorker>> make_worker(KmodQueue& q) = 0;

    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    /// The configuration create() was given (e.g. poll_us), for make_worker().
    [[nodiscard]] const DeviceConfig& config() const noexcept { return cfg_; }

private:
    struct Queue;

    Status open_queues(Backend& backend);
    /// The part of create() that takes over the recovering device cfg.dev_id.
    Status take_over(const DeviceConfig& cfg, ControlDevice& control);
    /// Ends the serve loops: STOP_DEV, or DEL_DEV if the device cannot be stopped. Idempotent.
    void halt() noexcept;

    std::string name_;
    std::uint32_t mode_;
    DeviceConfig cfg_;
    std::optional<ControlDevice> control_;
    DeviceInfo info_;
    std::unique_ptr<DeviceStats> stats_;
    std::vector<std::unique_ptr<Queue>> queues_;
    bool created_ = false;
    bool recovered_ = false;       ///< create() took over a recovering device
    bool ended_by_kernel_ = false; ///< serve() ended without our stop: someone else stopped it
    std::atomic<bool> halting_{false};
    std::atomic<bool> deleted_{false};
};

} // namespace userblk
