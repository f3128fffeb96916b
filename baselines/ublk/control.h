// ublk_drv's control device (/dev/ublk-control), spoken through an io_uring of 128-byte SQEs, and
// the loading of ublk_drv itself: the kernel's own module where it has one, else the one this
// build makes from linux-source-6.1 (transports/ublk/module/Makefile).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include "core/status.h"
#include "core/unique_fd.h"
#include "protocol.h"

namespace userblk::ublk {

/// One io_uring, set up and torn down with its owner.
class Uring {
public:
    /// A ring of entries SQEs with IORING_SETUP_* flags; what names it in the error.
    static Result<std::unique_ptr<Uring>> create(unsigned entries, unsigned flags,
                                                 std::string_view what);
    Uring(const Uring&) = delete;
    Uring& operator=(const Uring&) = delete;
    ~Uring();

    [[nodiscard]] io_uring* get() noexcept { return &ring_; }

private:
    Uring() = default;
    io_uring ring_{};
};

/// The control device. Each command is one SQE submitted and waited for; commands from several
/// threads take turns. Failures read "ublk: ADD_DEV failed: Operation not supported (is ublk_drv
/// loaded? ...)".
class Control {
public:
    /// Opens path and sets up the control ring (IORING_SETUP_SQE128). A missing path fails with
    /// "ublk: cannot open /dev/ublk-control: No such file or directory (is ublk_drv loaded? ...)".
    static Result<Control> open(const char* path = kControlPath);

    /// ADD_DEV; info is updated with the kernel's answer (the id, queues, max I/O, flags in force).
    Status add_dev(ublksrv_ctrl_dev_info& info) const;
    Status set_params(std::uint32_t id, ublk_params& params) const;
    [[nodiscard]] Result<ublksrv_ctrl_dev_info> get_dev_info(std::uint32_t id) const;
    /// START_DEV: waits until every queue has fetched every tag, then adds the disk /dev/ublkb<id>
    /// (whose partition scan the queues serve). pid is recorded as the daemon's.
    Status start_dev(std::uint32_t id, pid_t pid) const;
    /// STOP_DEV: removes the disk (waiting for requests in flight) and aborts every fetch.
    Status stop_dev(std::uint32_t id) const;
    /// DEL_DEV: stops the device if needed and removes it; waits until nothing refers to it (the
    /// daemon closed /dev/ublkc<id>, every opener closed the disk).
    Status del_dev(std::uint32_t id) const;

private:
    Control(unique_fd fd, std::unique_ptr<Uring> ring)
        : fd_(std::move(fd)), ring_(std::move(ring)), mutex_(std::make_unique<std::mutex>()) {}

    /// Runs control command op with cmd; its result (>= 0) or -errno.
    int run(std::uint32_t op, const ublksrv_ctrl_cmd& cmd) const;
    Status check(std::uint32_t op, int res, std::uint32_t id) const;

    unique_fd fd_;
    std::unique_ptr<Uring> ring_;
    std::unique_ptr<std::mutex> mutex_;
};

/// Where a ublk_drv.ko built by this tree may be: next to the running program
/// (<dir of exe>/ublk/ublk_drv.ko, as in a build folder) and where the build put it
/// (USERBLK_UBLK_KO), in that order, without duplicates. exe is /proc/self/exe's target.
std::vector<std::string> module_candidates(std::string_view exe);

/// Makes /dev/ublk-control available: nothing if it exists; else the kernel's own ublk_drv
/// (`modprobe ublk_drv`); else insmod of the first of module_candidates() that exists. Waits for
/// the control device to appear. *how, if given, says which ("present", "modprobe", or the .ko).
Status load_driver(std::string* how = nullptr);

/// STOP_DEV, then DEL_DEV of ublk device id from outside its daemon (`userblk del --transport
/// ublk ID`). A live daemon sees its fetches aborted and exits; this returns once the device is
/// gone. (DEL_DEV alone can hang forever on 6.1 right after a daemon was killed: see control.cpp.)
Status remove_device(std::uint32_t id);

} // namespace userblk::ublk
