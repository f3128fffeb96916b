#include "control.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/module.h"
#include "core/system.h"

namespace userblk::ublk {

namespace {

/// How long a device node may take to appear (devtmpfs makes it at once; udev may take a while).

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

} // namespace

// -- Uring ---------------------------------------------------------------------------------------

Result<std::unique_ptr<Uring>> Uring::create(unsigned entries, unsigned flags,
                                             std::string_view what) {
    std::unique_ptr<Uring> u(new Uring());
    io_uring_params p{};
    p.flags = flags;
    int r = io_uring_queue_init_params(entries, &u->ring_, &p);
    if (r < 0) {
        int err = -r;
        std::string why;
        if (err == EINVAL && (flags & IORING_SETUP_SQE128) != 0) {
            why = "the kernel lacks IORING_SETUP_SQE128: ublk needs Linux 5.19 or later";
        } else if (err == ENOSYS || err == EPERM) {
            why = "io_uring is not available (disabled, or a seccomp filter)";
        } else if (err == ENOMEM) {
            why = "locked memory limit (ulimit -l)?";
        }
        return Status::from_errno(err, "ublk: cannot set up " + std::string(what), why);
    }
    return u;
}

Uring::~Uring() {
    io_uring_queue_exit(&ring_);
}

// -- Control -------------------------------------------------------------------------------------

Result<Control> Control::open(const char* path) {
    unique_fd fd(::open(path, O_RDWR | O_CLOEXEC));
    if (!fd) {
        int err = errno;
        std::string why;
        if (err == ENOENT || err == ENXIO || err == ENODEV) {
            why = "is ublk_drv loaded? the kernel lacks CONFIG_BLK_DEV_UBLK and the module built "
                  "from linux-source-6.1 (target ublk_kmod) was not loaded";
        } else if (err == EACCES || err == EPERM) {
            why = "run as root";
        }
        return Status::from_errno(err, std::string("ublk: cannot open ") + path, why);
    }
    auto ring = Uring::create(4, IORING_SETUP_SQE128, "the control ring");
    if (!ring.ok()) {
        return ring.status();
    }
    return Control(std::move(fd), std::move(ring).value());
}

int Control::run(std::uint32_t op, const ublksrv_ctrl_cmd& cmd) const {
    std::lock_guard lock(*mutex_);
    io_uring* ring = ring_->get();
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    if (sqe == nullptr) {
        return -EBUSY; // cannot happen: one command at a time in a ring of 4
    }
    prep_ctrl_cmd(sqe, fd_.get(), op, cmd);
    int r = io_uring_submit(ring);
    if (r < 0) {
        return r;
    }
    io_uring_cqe* cqe = nullptr;
    do {
        r = io_uring_wait_cqe(ring, &cqe);
    } while (r == -EINTR);
    if (r < 0) {
        return r;
    }
    int res = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    return res;
}

Status Control::check(std::uint32_t op, int res, std::uint32_t id) const {
    if (res >= 0) {
        return {};
    }
    std::string what = "ublk: " + ctrl_cmd_name(op);
    if (op != UBLK_CMD_ADD_DEV) {
        what += " of device " + std::to_string(id);
    }
    return Status::from_errno(-res, what + " failed", explain_ctrl_error(op, -res, id));
}

Status Control::add_dev(ublksrv_ctrl_dev_info& info) const {
    const std::uint32_t wanted = info.dev_id;
    ublksrv_ctrl_cmd cmd = ctrl_cmd(wanted, &info, sizeof(info));
    return check(UBLK_CMD_ADD_DEV, run(UBLK_CMD_ADD_DEV, cmd), wanted);
}

Status Control::set_params(std::uint32_t id, ublk_params& params) const {
    ublksrv_ctrl_cmd cmd = ctrl_cmd(id, &params, sizeof(params));
    return check(UBLK_CMD_SET_PARAMS, run(UBLK_CMD_SET_PARAMS, cmd), id);
}

Result<ublksrv_ctrl_dev_info> Control::get_dev_info(std::uint32_t id) const {
    ublksrv_ctrl_dev_info info{};
    ublksrv_ctrl_cmd cmd = ctrl_cmd(id, &info, sizeof(info));
    if (Status st = check(UBLK_CMD_GET_DEV_INFO, run(UBLK_CMD_GET_DEV_INFO, cmd), id); !st.ok()) {
        return st;
    }
    return info;
}

Status Control::start_dev(std::uint32_t id, pid_t pid) const {
    ublksrv_ctrl_cmd cmd = ctrl_cmd(id, nullptr, 0, static_cast<std::uint64_t>(pid));
    return check(UBLK_CMD_START_DEV, run(UBLK_CMD_START_DEV, cmd), id);
}

Status Control::stop_dev(std::uint32_t id) const {
    ublksrv_ctrl_cmd cmd = ctrl_cmd(id, nullptr, 0);
    return check(UBLK_CMD_STOP_DEV, run(UBLK_CMD_STOP_DEV, cmd), id);
}

Status Control::del_dev(std::uint32_t id) const {
    ublksrv_ctrl_cmd cmd = ctrl_cmd(id, nullptr, 0);
    return check(UBLK_CMD_DEL_DEV, run(UBLK_CMD_DEL_DEV, cmd), id);
}

// -- the driver ----------------------------------------------------------------------------------

std::vector<std::string> module_candidates(std::string_view exe) {
    std::vector<std::string> out;
    if (auto slash = exe.rfind('/'); slash != std::string_view::npos) {
        out.push_back(std::string(exe.substr(0, slash)) + "/ublk/ublk_drv.ko");
    }
#ifdef USERBLK_UBLK_KO
    if (out.empty() || out.front() != USERBLK_UBLK_KO) {
        out.emplace_back(USERBLK_UBLK_KO);
    }
#endif
    return out;
}

namespace {

std::string self_exe() {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

} // namespace

Status load_driver(std::string* how) {
    if (exists(kControlPath)) {
        if (how != nullptr) {
            *how = "present";
        }
        return {};
    }
    // The kernel's own module where it was built with CONFIG_BLK_DEV_UBLK=m, else ours.
    ModuleSpec spec{
        .name = "ublk_drv",
        .params = {},
        .built = module_candidates(self_exe()),
        .ready_path = kControlPath,
        .hint = "build it with the CMake target ublk_kmod (needs linux-source-6.1: make deps)",
    };
    return load_module(spec, how);
}

Status remove_device(std::uint32_t id) {
    if (!exists(kControlPath)) {
        return Status::from_errno(
            ENODEV, "ublk: DEL_DEV of device " + std::to_string(id) + " failed",
            std::string(kControlPath) + " does not exist: ublk_drv is not loaded, so there is no "
                                        "ublk device");
    }
    auto control = Control::open();
    if (!control.ok()) {
        return control.status();
    }
    // STOP_DEV first, as its own command. If the daemon was killed and ublk_drv's monitor has
    // not stopped the device yet, the command that aborts the dead daemon's fetches drops the
    // last references to its /dev/ublkc<id>; the final fput() becomes task work of the io-wq
    // worker that runs the command. DEL_DEV then waits, uninterruptibly, for that release: run
    // by the same worker, it would wait forever (ublk_drv 6.1). After STOP_DEV the worker runs
    // the fput before it takes the next command.
    if (Status st = control->stop_dev(id); !st.ok()) {
        return st;
    }
    return control->del_dev(id);
}

} // namespace userblk::ublk
