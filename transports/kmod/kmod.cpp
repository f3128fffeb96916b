#include "kmod.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/log.h"
#include "core/queue_threads.h"

namespace userblk {

namespace {

/// How long a daemon taking over a device waits for the old one to close a queue (10 s).
constexpr int kTakeOverTries = 1000;
constexpr unsigned kTakeOverPollUs = 10000;

std::string device_name(std::uint32_t id) {
    return "device " + std::to_string(id);
}

/// A reason common to every ioctl.
std::string explain_common(int err) {
    if (err == ENOTTY) {
        return "userblk.ko does not know this ioctl: the module and this program differ in version";
    }
    if (err == EPERM || err == EACCES) {
        return "run as root (CAP_SYS_ADMIN); a device belongs to the process that added it "
               "(`userblk del ID` acts on anyone's)";
    }
    return {};
}

std::string explain_device(int err, std::uint32_t id) {
    switch (err) {
    case ENODEV:
        return "no device with id " + std::to_string(id);
    case ENOTCONN:
        return "not every queue has a daemon (an open queue fd)";
    case ESHUTDOWN:
        return "the device is dead: delete it and add a new one";
    case EBUSY:
        return "the device is not in the state this needs (`userblk list` shows it)";
    default:
        return explain_common(err);
    }
}

Status ioctl_failed(int err, const std::string& what, const std::string& why) {
    return Status::from_errno(err, what + " failed", why);
}

} // namespace

Result<ControlDevice> ControlDevice::open(const char* path) {
    int fd = ::open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        std::string why;
        if (err == ENOENT || err == ENXIO || err == ENODEV) {
            why = "is userblk.ko loaded?";
        } else if (err == EACCES || err == EPERM) {
            why = "run as root";
        }
        return Status::from_errno(err, std::string("cannot open ") + path, why);
    }
    return ControlDevice(unique_fd(fd));
}

Status ControlDevice::add_dev(userblk_dev_config& cfg, std::string_view transport) const {
    if (::ioctl(fd_.get(), USERBLK_IOC_ADD_DEV, &cfg) < 0) {
        int err = errno;
        return ioctl_failed(err, "ADD_DEV", explain_add_dev(err, cfg, transport));
    }
    return {};
}

Status ControlDevice::start_dev(std::uint32_t id) const {
    if (::ioctl(fd_.get(), USERBLK_IOC_START_DEV, static_cast<unsigned long>(id)) < 0) {
        int err = errno;
        return ioctl_failed(err, "START_DEV of " + device_name(id), explain_device(err, id));
    }
    return {};
}

namespace {

unsigned long control_arg(std::uint32_t id, bool force) {
    return static_cast<unsigned long>(id) | (force ? USERBLK_CTL_FORCE : 0UL);
}

} // namespace

Status ControlDevice::stop_dev(std::uint32_t id, bool force) const {
    if (::ioctl(fd_.get(), USERBLK_IOC_STOP_DEV, control_arg(id, force)) < 0) {
        int err = errno;
        return ioctl_failed(err, "STOP_DEV of " + device_name(id), explain_device(err, id));
    }
    return {};
}

Status ControlDevice::del_dev(std::uint32_t id, bool force) const {
    if (::ioctl(fd_.get(), USERBLK_IOC_DEL_DEV, control_arg(id, force)) < 0) {
        int err = errno;
        std::string why = explain_device(err, id);
        if (err == EBUSY) {
            why = "the device is in use";
        }
        return ioctl_failed(err, "DEL_DEV of " + device_name(id), why);
    }
    return {};
}

Result<userblk_dev_config> ControlDevice::get_info(std::uint32_t id) const {
    userblk_dev_config cfg{};
    cfg.abi_version = USERBLK_ABI_VERSION;
    cfg.dev_id = id;
    if (::ioctl(fd_.get(), USERBLK_IOC_GET_INFO, &cfg) < 0) {
        int err = errno;
        return ioctl_failed(err, "GET_INFO of " + device_name(id), explain_device(err, id));
    }
    return cfg;
}

Status ControlDevice::recover_dev(std::uint32_t id) const {
    if (::ioctl(fd_.get(), USERBLK_IOC_RECOVER_DEV, static_cast<unsigned long>(id)) < 0) {
        int err = errno;
        std::string why = explain_device(err, id);
        if (err == EBUSY) {
            why = "it is not recovering: only a device added with the recovery feature whose "
                  "daemon died or handed it over can be taken over";
        } else if (err == ESHUTDOWN) {
            why = "its recovery timed out and it is dead: delete it and add a new one";
        }
        return ioctl_failed(err, "RECOVER_DEV of " + device_name(id), why);
    }
    return {};
}

Status ControlDevice::handover_dev(std::uint32_t id, bool force) const {
    if (::ioctl(fd_.get(), USERBLK_IOC_HANDOVER_DEV, control_arg(id, force)) < 0) {
        int err = errno;
        std::string why = explain_device(err, id);
        if (err == EINVAL) {
            why = "it was added without the recovery feature (--features recovery): no daemon "
                  "could take it over";
        } else if (err == EBUSY) {
            why = "it is not live (not started yet, or already recovering)";
        }
        return ioctl_failed(err, "HANDOVER_DEV of " + device_name(id), why);
    }
    return {};
}

Result<unique_fd> ControlDevice::open_queue(std::uint32_t id, std::uint16_t queue) const {
    userblk_queue_open qo{};
    qo.dev_id = id;
    qo.queue_id = queue;
    int fd = ::ioctl(fd_.get(), USERBLK_IOC_OPEN_QUEUE, &qo);
    if (fd < 0) {
        int err = errno;
        std::string why = explain_device(err, id);
        if (err == EBUSY) {
            why = "the queue is already open";
        }
        return ioctl_failed(err, "OPEN_QUEUE " + std::to_string(queue) + " of " + device_name(id),
                            why);
    }
    return unique_fd(fd);
}

userblk_dev_config to_uapi(const DeviceConfig& cfg, std::uint32_t mode) noexcept {
    userblk_dev_config c{};
    c.abi_version = USERBLK_ABI_VERSION;
    c.dev_id = cfg.dev_id;
    c.mode = static_cast<std::uint32_t>(mode);
    c.logical_block_size = cfg.block_size;
    c.size = cfg.size;
    c.features = cfg.features;
    c.nr_queues = cfg.nr_queues;
    c.nr_poll_queues = cfg.nr_poll_queues;
    c.queue_depth = cfg.queue_depth;
    c.max_io_bytes = cfg.max_io_bytes;
    c.timeout_ms = cfg.timeout_ms;
    c.recovery_timeout_ms = cfg.recovery_timeout_ms;
    return c;
}

DeviceInfo info_from_uapi(const userblk_dev_config& cfg) {
    DeviceInfo info;
    info.id = cfg.dev_id;
    info.path = disk_path(cfg.dev_id);
    info.size = cfg.size;
    info.block_size = cfg.logical_block_size;
    info.nr_queues = cfg.nr_queues;
    info.nr_poll_queues = cfg.nr_poll_queues;
    info.queue_depth = cfg.queue_depth;
    info.max_io_bytes = cfg.max_io_bytes;
    info.timeout_ms = cfg.timeout_ms;
    info.recovery_timeout_ms = cfg.recovery_timeout_ms;
    info.features = cfg.features;
    return info;
}

std::string explain_add_dev(int err, const userblk_dev_config& cfg, std::string_view transport) {
    auto n = [](std::uint64_t v) { return std::to_string(v); };
    if (err == EEXIST && cfg.dev_id != USERBLK_DEV_ID_ANY) {
        return "device id " + n(cfg.dev_id) + " is taken";
    }
    if (err == EOPNOTSUPP || err == EPROTONOSUPPORT) {
        return "the loaded userblk.ko does not serve mode " + n(cfg.mode) +
               (transport.empty() ? "" : " (" + std::string(transport) + ")") +
               ": built without it? The kernel log says";
    }
    if (err == E2BIG && cfg.mode == USERBLK_MODE_RING) {
        return "a ring queue's shared area holds a buffer of max I/O (" +
               (cfg.max_io_bytes != 0 ? n(cfg.max_io_bytes) + " bytes" : "the module's default") +
               ") per tag; depth " + n(cfg.queue_depth) +
               " of them exceed the module's limit (see the kernel log): lower --depth or "
               "--max-io";
    }
    if (err != EINVAL) {
        return explain_common(err);
    }
    const std::uint32_t bs = cfg.logical_block_size;
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    if (cfg.abi_version != USERBLK_ABI_VERSION) {
        return "abi_version " + n(cfg.abi_version) + ", this program speaks " +
               n(USERBLK_ABI_VERSION);
    }
    if (cfg.dev_id != USERBLK_DEV_ID_ANY && cfg.dev_id >= USERBLK_MAX_DEVICES) {
        return "device id " + n(cfg.dev_id) + " is not below " + n(USERBLK_MAX_DEVICES);
    }
    if (cfg.mode < USERBLK_MODE_COPY || cfg.mode >= USERBLK_MODE_END) {
        return "unknown mode " + n(cfg.mode);
    }
    if (bs < 512 || bs > 4096 || bs > page || !std::has_single_bit(bs)) {
        return "block size " + n(bs) + " is not a power of two from 512 to " +
               n(std::min<std::uint64_t>(4096, page));
    }
    if (cfg.size == 0) {
        return "size 0";
    }
    if (cfg.size > static_cast<std::uint64_t>(INT64_MAX)) {
        return "size " + n(cfg.size) + " is too large";
    }
    if (cfg.size % bs != 0) {
        return "size " + n(cfg.size) + " is not a multiple of block size " + n(bs);
    }
    if ((cfg.features & ~static_cast<std::uint64_t>(USERBLK_F_ALL)) != 0) {
        return "unknown feature bits " + format_features(cfg.features & ~USERBLK_F_ALL);
    }
    if (cfg.nr_queues < 1 || cfg.nr_queues > USERBLK_MAX_QUEUES) {
        return "queues " + n(cfg.nr_queues) + " is outside 1.." + n(USERBLK_MAX_QUEUES);
    }
    if (cfg.nr_poll_queues >= cfg.nr_queues) {
        return n(cfg.nr_poll_queues) + " poll queues of " + n(cfg.nr_queues) +
               " queues: at least one queue must take I/O that is not polled (raise --queues)";
    }
    if (cfg.nr_poll_queues != 0 && cfg.mode != USERBLK_MODE_RING) {
        return "poll queues are a ring feature: the submitter reaps a ring's completions, while "
               "the other modes complete in the daemon's write()";
    }
    if (cfg.queue_depth < 1 || cfg.queue_depth > USERBLK_MAX_DEPTH) {
        return "depth " + n(cfg.queue_depth) + " is outside 1.." + n(USERBLK_MAX_DEPTH);
    }
    if (cfg.max_io_bytes != 0 && cfg.max_io_bytes < page) {
        return "max I/O " + n(cfg.max_io_bytes) + " is below the page size " + n(page);
    }
    if (cfg.max_io_bytes != 0 && cfg.max_io_bytes > USERBLK_MAX_IO_BYTES) {
        return "max I/O " + n(cfg.max_io_bytes) + " exceeds " + n(USERBLK_MAX_IO_BYTES);
    }
    if (cfg.max_io_bytes != 0 && cfg.max_io_bytes % bs != 0) {
        return "max I/O " + n(cfg.max_io_bytes) + " is not a multiple of block size " + n(bs);
    }
    if (cfg.timeout_ms != 0 &&
        (cfg.timeout_ms < USERBLK_MIN_TIMEOUT_MS || cfg.timeout_ms > USERBLK_MAX_TIMEOUT_MS)) {
        return "timeout " + n(cfg.timeout_ms) + " ms is outside " + n(USERBLK_MIN_TIMEOUT_MS) +
               ".." + n(USERBLK_MAX_TIMEOUT_MS);
    }
    for (auto r : cfg.reserved) {
        if (r != 0) {
            return "reserved fields are not zero";
        }
    }
    if (cfg.recovery_timeout_ms != 0 && (cfg.features & USERBLK_F_RECOVERY) == 0) {
        return "a recovery timeout without the recovery feature";
    }
    if (cfg.recovery_timeout_ms != 0 && (cfg.recovery_timeout_ms < USERBLK_MIN_TIMEOUT_MS ||
                                         cfg.recovery_timeout_ms > USERBLK_MAX_TIMEOUT_MS)) {
        return "recovery timeout " + n(cfg.recovery_timeout_ms) + " ms is outside " +
               n(USERBLK_MIN_TIMEOUT_MS) + ".." + n(USERBLK_MAX_TIMEOUT_MS);
    }
    return {};
}

/// A queue of the device: its fd, backend context, worker, and the worker's outcome.
struct KmodTransport::Queue {
    unsigned id = 0;
    unique_fd fd;
    std::optional<BackendQueue> backend_queue;
    std::unique_ptr<KmodQueue> view;
    std::unique_ptr<KmodQueueWorker> worker;
};

KmodTransport::KmodTransport(const TransportEntry& entry) : name_(entry.name), mode_(entry.mode) {}

KmodTransport::~KmodTransport() {
    Status st = destroy();
    if (!st.ok()) {
        log_error("%s: %s", name_.c_str(), st.message().c_str());
    }
}

void KmodTransport::describe(Capabilities& caps) const {
    caps.set("kernel", "userblk");
    caps.set_number("abi_version", USERBLK_ABI_VERSION);
    caps.set("control_device", USERBLK_CONTROL_PATH);
    caps.set("thread_model", "one thread per queue");
    caps.set_number("max_queues", USERBLK_MAX_QUEUES);
    caps.set_number("max_depth", USERBLK_MAX_DEPTH);
    caps.set_number("max_io_bytes", USERBLK_MAX_IO_BYTES);
    caps.set("features", format_features(USERBLK_F_ALL));
    describe_mode(caps);
}

Status KmodTransport::create(const DeviceConfig& cfg, Backend* backend) {
    if (backend == nullptr) {
        return Status::from_errno(EINVAL, name_ + ": create failed", "a backend is required");
    }
    if (created_) {
        return Status::from_errno(EBUSY, name_ + ": create failed", "this object has a device");
    }
    auto control = ControlDevice::open();
    if (!control.ok()) {
        return control.status();
    }
    if (cfg.recover) {
        if (Status st = take_over(cfg, control.value()); !st.ok()) {
            return st;
        }
        control_.emplace(std::move(control).value());
        created_ = true;
        recovered_ = true;
        cfg_ = cfg;
        info_.id = cfg.dev_id;
        info_.path = disk_path(cfg.dev_id);
        Status st = open_queues(*backend);
        if (!st.ok()) {
            queues_.clear(); // the device stays recovering: the next daemon may try again
        }
        return st;
    }
    userblk_dev_config uc = to_uapi(cfg, mode_);
    if (Status st = control->add_dev(uc, name_); !st.ok()) {
        return st;
    }
    control_.emplace(std::move(control).value());
    created_ = true;
    cfg_ = cfg;
    info_.id = uc.dev_id;
    info_.path = disk_path(uc.dev_id);

    Status st = open_queues(*backend);
    if (!st.ok()) {
        Status undo = destroy();
        if (!undo.ok()) {
            log_error("%s: %s", name_.c_str(), undo.message().c_str());
        }
    }
    return st;
}

Status KmodTransport::take_over(const DeviceConfig& cfg, ControlDevice& control) {
    const std::string what = name_ + ": taking over device " + std::to_string(cfg.dev_id);
    auto got = control.get_info(cfg.dev_id);
    if (!got.ok()) {
        return got.status();
    }
    if (got->mode != mode_) {
        return Status::from_errno(EINVAL, what + " failed",
                                  "it is served in userblk.ko mode " + std::to_string(got->mode) +
                                      ", not " + name_ + "'s (" + std::to_string(mode_) +
                                      "): give its own --transport");
    }
    if ((got->features & USERBLK_F_RECOVERY) == 0) {
        return Status::from_errno(EINVAL, what + " failed",
                                  "it was added without the recovery feature: a device whose "
                                  "daemon died without it is dead");
    }
    return control.recover_dev(cfg.dev_id);
}

Status KmodTransport::open_queues(Backend& backend) {
    // ADD_DEV resolved the defaults (max_io_bytes, timeout_ms); GET_INFO tells what is in force.
    auto got = control_->get_info(info_.id);
    if (!got.ok()) {
        return got.status();
    }
    info_ = info_from_uapi(got.value());
    if (info_.max_io_bytes == 0) {
        info_.max_io_bytes = USERBLK_MAX_IO_BYTES; // a module that does not report it: the limit
    }
    if (info_.nr_queues == 0 || info_.nr_queues > USERBLK_MAX_QUEUES) {
        return Status::from_errno(EPROTO, "GET_INFO of device " + std::to_string(info_.id),
                                  "it reports " + std::to_string(info_.nr_queues) + " queues");
    }
    stats_ = std::make_unique<DeviceStats>(info_.nr_queues);
    for (unsigned i = 0; i < info_.nr_queues; ++i) {
        auto q = std::make_unique<Queue>();
        q->id = i;
        auto fd = control_->open_queue(info_.id, static_cast<std::uint16_t>(i));
        // Taking over: the old daemon may still be closing its queue (a hand-over, or a kill
        // whose exit has not finished): EBUSY until it has, for a bounded while.
        for (int tries = 0; recovered_ && !fd.ok() && fd.status().error_number() == EBUSY &&
                            tries < kTakeOverTries;
             ++tries) {
            ::usleep(kTakeOverPollUs);
            fd = control_->open_queue(info_.id, static_cast<std::uint16_t>(i));
        }
        if (!fd.ok()) {
            if (recovered_ && fd.status().error_number() == EBUSY) {
                return Status::from_errno(
                    EBUSY,
                    name_ + ": OPEN_QUEUE " + std::to_string(i) + " of device " +
                        std::to_string(info_.id),
                    "the old daemon still has it open after " +
                        std::to_string(kTakeOverTries * kTakeOverPollUs / 1000) +
                        " ms: it is alive (stop it, or `userblk "
                        "handover` it first)");
            }
            return fd.status();
        }
        q->fd = std::move(fd).value();
        auto bq = BackendQueue::open(backend, i, info_.max_io_bytes, stats_->queue(i));
        if (!bq.ok()) {
            return bq.status();
        }
        q->backend_queue.emplace(std::move(bq).value());
        q->view = std::make_unique<KmodQueue>(
            KmodQueue{i, q->fd.get(), info_, backend, *q->backend_queue, stats_->queue(i)});
        auto worker = make_worker(*q->view);
        if (!worker.ok()) {
            return worker.status();
        }
        q->worker = std::move(worker).value();
        queues_.push_back(std::move(q));
    }
    return {};
}

void KmodTransport::halt() noexcept {
    if (halting_.exchange(true) || deleted_.load()) {
        return;
    }
    Status st = control_->stop_dev(info_.id);
    if (st.ok() || st.error_number() == ENODEV) {
        return;
    }
    // A device that cannot be stopped (e.g. never started) is deleted, which also ends the loops.
    Status del = control_->del_dev(info_.id);
    if (del.ok() || del.error_number() == ENODEV) {
        deleted_.store(true);
        return;
    }
    log_error("%s: cannot stop the device: %s; %s", name_.c_str(), st.message().c_str(),
              del.message().c_str());
}

Status KmodTransport::serve(std::stop_token stop, const ReadyFn& ready) {
    if (!created_ || deleted_.load() || queues_.empty()) {
        return Status::from_errno(EINVAL, name_ + ": serve failed", "no device was created");
    }
    // A kmod queue is ready as soon as its thread runs: requests that arrive before its first
    // read() wait in the kernel.
    QueueThreads spec{
        .name = name_,
        .nr_queues = static_cast<unsigned>(queues_.size()),
        .run =
            [this, stop](unsigned i, const QueueThreads::Ready& is_ready) {
                is_ready({});
                return queues_[i]->worker->run(stop);
            },
        .start = [this] { return control_->start_dev(info_.id); },
        .halt = [this] { halt(); },
    };
    return serve_queues(spec, stop, ready, info_, ended_by_kernel_);
}

Status KmodTransport::destroy() {
    // Queue fds, workers and buffers go first: the threads have ended (serve() joined them).
    queues_.clear();
    if (!created_ || deleted_.load()) {
        return {};
    }
    auto got = control_->get_info(info_.id);
    if (!got.ok() && got.status().error_number() == ENODEV) {
        deleted_.store(true); // someone else deleted it (`userblk del`)
        return {};
    }
    if (got.ok() && got->state == USERBLK_STATE_RECOVERING) {
        // Handed over (HANDOVER_DEV), or a take-over that failed: the device waits for the
        // next daemon, within its recovery timeout; deleting it would fail what it holds.
        deleted_.store(true);
        log_error("%s: device %u is recovering: left for the next daemon (`userblk recover %u`) "
                  "for up to %u ms",
                  name_.c_str(), info_.id, info_.id, got->recovery_timeout_ms);
        return {};
    }
    if (got.ok() && ended_by_kernel_ && got->state == USERBLK_STATE_LIVE) {
        // Our device ended without us, yet the id is live: it was deleted and the id reused.
        deleted_.store(true);
        log_error("%s: not deleting device %u: it is live again, so the id was reused",
                  name_.c_str(), info_.id);
        return {};
    }
    Status st = control_->del_dev(info_.id);
    if (st.ok() || st.error_number() == ENODEV) {
        deleted_.store(true);
        return {};
    }
    return st;
}

} // namespace userblk
