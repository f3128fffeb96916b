#include "ublk.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io.h"
#include "core/log.h"
#include "core/queue_threads.h"

namespace userblk {

namespace ublk {

namespace {

constexpr std::uint32_t kMaxNotes = 16;
constexpr unsigned kNodeWaitMs = 5000;

std::size_t page_size() {
    return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

/// Opens the char device of id, waiting for its node (udev may create it after ADD_DEV returns).
Result<unique_fd> open_char_device(std::uint32_t id) {
    const std::string path = char_path(id);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kNodeWaitMs);
    while (true) {
        int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
            return unique_fd(fd);
        }
        int err = errno;
        if (err != ENOENT || std::chrono::steady_clock::now() > deadline) {
            return Status::from_errno(err, "ublk: cannot open " + path,
                                      err == EBUSY ? "another daemon has it open" : "");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

} // namespace

// -- one queue -----------------------------------------------------------------------------------

Result<std::unique_ptr<UblkQueue>> UblkQueue::create(const QueueContext& q) {
    const std::string what = "ublk: queue " + std::to_string(q.id);
    const std::size_t page = page_size();
    // Read-only: ublk_drv refuses a writable mapping of its descriptors (EPERM).
    auto descs = Mapping::shared(q.char_fd, desc_area_size(q.device.queue_depth, page),
                                 static_cast<off_t>(desc_area_offset(q.id, page)), PROT_READ,
                                 what + ": descriptors");
    if (!descs.ok()) {
        return descs.status();
    }
    auto buffers =
        Mapping::anonymous(static_cast<std::size_t>(q.device.queue_depth) * q.device.max_io_bytes,
                           true, what + ": buffers");
    if (!buffers.ok()) {
        return buffers.status();
    }
    // COOP_TASKRUN: the task work that posts a request's CQE runs when the thread enters the
    // kernel anyway, without an interrupt; a kernel that lacks it gets a plain ring.
    auto ring =
        Uring::create(q.device.queue_depth, IORING_SETUP_COOP_TASKRUN, what + "'s io_uring");
    if (!ring.ok() && ring.status().error_number() == EINVAL) {
        ring = Uring::create(q.device.queue_depth, 0, what + "'s io_uring");
    }
    if (!ring.ok()) {
        return ring.status();
    }
    return std::unique_ptr<UblkQueue>(new UblkQueue(
        q, std::move(descs).value(), std::move(buffers).value(), std::move(ring).value()));
}

UblkQueue::UblkQueue(const QueueContext& q, Mapping descs, Mapping buffers,
                     std::unique_ptr<Uring> ring)
    : q_(q), descs_(std::move(descs)), buffers_(std::move(buffers)), ring_(std::move(ring)),
      buf_size_(q.device.max_io_bytes), aborted_(q.device.queue_depth, 0) {}

std::uint64_t UblkQueue::buffer_addr(std::uint16_t tag) const noexcept {
    return reinterpret_cast<std::uintptr_t>(buffers_.data() +
                                            static_cast<std::size_t>(tag) * buf_size_);
}

void UblkQueue::note(const char* what, std::uint16_t tag, int err) noexcept {
    if (notes_ >= kMaxNotes) {
        return;
    }
    ++notes_;
    const char* text = ::strerrordesc_np(err);
    log_error("ublk: queue %u: %s (tag %u): %s%s", static_cast<unsigned>(q_.id), what,
              static_cast<unsigned>(tag), text != nullptr ? text : "unknown error",
              notes_ == kMaxNotes ? "; further problems on this queue are only counted" : "");
}

io_uring_sqe* UblkQueue::next_sqe() noexcept {
    io_uring* ring = ring_->get();
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    if (sqe == nullptr) { // cannot happen: one command per tag, and the ring has depth entries
        if (io_uring_submit(ring) >= 0) {
            q_.stats.wait_calls.add();
            QueueStats::count_batch(q_.stats.completion_batches, queued_);
            queued_ = 0;
        }
        sqe = io_uring_get_sqe(ring);
    }
    return sqe;
}

Status UblkQueue::fetch_all() {
    const std::string what = "ublk: queue " + std::to_string(q_.id);
    io_uring* ring = ring_->get();
    const auto depth = static_cast<std::uint16_t>(q_.device.queue_depth);
    for (std::uint16_t tag = 0; tag < depth; ++tag) {
        io_uring_sqe* sqe = next_sqe();
        if (sqe == nullptr) {
            return Status::from_errno(EBUSY, what + ": no SQE for FETCH_REQ of tag " +
                                                 std::to_string(tag));
        }
        prep_io_cmd(sqe, q_.char_fd, UBLK_IO_FETCH_REQ, q_.id, tag, 0, buffer_addr(tag));
    }
    int r = io_uring_submit(ring);
    q_.stats.wait_calls.add();
    if (r < 0) {
        return Status::from_errno(-r, what + ": submitting FETCH_REQ failed");
    }
    // A refused FETCH_REQ completes at once (its CQE is there when io_uring_enter returns); one
    // that was taken completes only with a request, or with UBLK_IO_RES_ABORT at a stop.
    unsigned head = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(ring, head, cqe) {
        if (cqe->res < 0 && cqe->res != UBLK_IO_RES_ABORT) {
            int err = -cqe->res;
            return Status::from_errno(err,
                                      what + ": FETCH_REQ of tag " +
                                          std::to_string(user_data_tag(cqe->user_data)) + " failed",
                                      err == EBUSY    ? "the queue is served already"
                                      : err == EINVAL ? "ublk_drv refused the queue, tag or buffer"
                                                      : "");
        }
    }
    return {};
}

std::int32_t UblkQueue::run_request(std::uint16_t tag) noexcept {
    QueueStats& s = q_.stats;
    // The kernel wrote the descriptor before the CQE; copy it once and trust only the copy.
    ublksrv_io_desc iod;
    std::memcpy(&iod, descs_.data() + static_cast<std::size_t>(tag) * sizeof(iod), sizeof(iod));
    DescCheck check = DescCheck::ok;
    const userblk_io_desc d = to_request(iod, tag, buf_size_, &check);
    if (check == DescCheck::ok) {
        std::span<std::byte> data;
        if (d.op == USERBLK_OP_READ || d.op == USERBLK_OP_WRITE) {
            data = buffers_.bytes().subspan(static_cast<std::size_t>(tag) * buf_size_, d.len);
        }
        return commit_result(d, execute(q_.backend, q_.backend_queue, d, data));
    }
    s.protocol_errors.add();
    if (check == DescCheck::unknown_op) {
        note("an op this server does not know", tag, EOPNOTSUPP);
        return commit_result(d, execute(q_.backend, q_.backend_queue, d, {})); // -EOPNOTSUPP
    }
    note(check == DescCheck::too_long ? "a request longer than the buffer"
                                      : "a request longer than 4 GiB",
         tag, EIO);
    s.count_request(d.op, d.len);
    s.io_errors.add();
    return -EIO;
}

bool UblkQueue::handle(const io_uring_cqe& cqe) {
    const std::uint16_t tag = user_data_tag(cqe.user_data);
    const std::uint32_t op = user_data_op(cqe.user_data);
    if (tag >= aborted_.size()) {
        q_.stats.protocol_errors.add();
        note("a completion for a tag beyond the depth", tag, EPROTO);
        return true;
    }
    if (cqe.res == UBLK_IO_RES_ABORT) {
        if (aborted_[tag] == 0) {
            aborted_[tag] = 1;
            ++nr_aborted_;
        }
        return true;
    }
    if (cqe.res == UBLK_IO_RES_OK) {
        std::int32_t result = run_request(tag);
        io_uring_sqe* sqe = next_sqe();
        if (sqe == nullptr) {
            error_ = Status::from_errno(EBUSY, "ublk: queue " + std::to_string(q_.id) +
                                                   ": no SQE for COMMIT_AND_FETCH_REQ");
            return false;
        }
        prep_io_cmd(sqe, q_.char_fd, UBLK_IO_COMMIT_AND_FETCH_REQ, q_.id, tag, result,
                    buffer_addr(tag));
        ++queued_;
        return true;
    }
    // UBLK_IO_RES_NEED_GET_DATA (never asked for) or a refused command: the request of that tag
    // stays with us and cannot be answered. Give up: once this thread has exited, ublk_drv's
    // monitor fails the queue's requests and stops the device.
    q_.stats.protocol_errors.add();
    const int err = cqe.res > 0 ? EPROTO : -cqe.res;
    error_ = Status::from_errno(
        err,
        "ublk: queue " + std::to_string(q_.id) + ": " +
            (op == UBLK_IO_FETCH_REQ ? "FETCH_REQ" : "COMMIT_AND_FETCH_REQ") + " of tag " +
            std::to_string(tag) + " failed",
        cqe.res > 0 ? "unexpected result " + std::to_string(cqe.res) : std::string());
    return false;
}

// The loop: one io_uring_enter per pass submits the COMMIT_AND_FETCH_REQs of the requests served
// in the previous pass and waits for at least one CQE; then every CQE ready is served. QD1 costs
// one io_uring_enter per request (plus the sleep and wake-up); under load one per batch. It ends
// when every tag was aborted by STOP_DEV or DEL_DEV (ours or another's) or by ublk_drv's monitor.
Status UblkQueue::serve() {
    QueueStats& s = q_.stats;
    io_uring* ring = ring_->get();
    const std::uint32_t depth = q_.device.queue_depth;
    while (nr_aborted_ < depth) {
        int r = io_uring_submit_and_wait(ring, 1);
        s.wait_calls.add();
        if (r < 0) {
            if (r == -EINTR) {
                continue;
            }
            return Status::from_errno(-r, "ublk: queue " + std::to_string(q_.id) +
                                              ": io_uring_enter failed");
        }
        if (queued_ > 0) {
            QueueStats::count_batch(s.completion_batches, queued_);
            queued_ = 0;
        }
        unsigned head = 0;
        unsigned seen = 0;
        std::uint64_t requests = 0;
        io_uring_cqe* cqe = nullptr;
        bool ok = true;
        io_uring_for_each_cqe(ring, head, cqe) {
            ++seen;
            requests += cqe->res == UBLK_IO_RES_OK ? 1 : 0;
            if (!handle(*cqe)) {
                ok = false;
                break;
            }
        }
        io_uring_cq_advance(ring, seen);
        if (requests > 0) {
            QueueStats::count_batch(s.request_batches, requests);
        }
        if (!ok) {
            return error_;
        }
    }
    return {};
}

} // namespace ublk

// -- the transport -------------------------------------------------------------------------------

namespace {

using namespace ublk;

class UblkTransport final : public Transport {
public:
    UblkTransport() = default;
    ~UblkTransport() override {
        Status st = destroy();
        if (!st.ok()) {
            log_error("%s", st.message().c_str());
        }
    }

    void describe(Capabilities& caps) const override;
    Status create(const DeviceConfig& cfg, Backend* backend) override;
    Status serve(std::stop_token stop, const ReadyFn& ready) override;
    Status destroy() override;
    [[nodiscard]] DeviceInfo info() const override { return info_; }
    [[nodiscard]] const DeviceStats* stats() const override { return stats_.get(); }

private:
    struct Queue {
        std::optional<BackendQueue> backend_queue;
        std::unique_ptr<QueueContext> context;
        std::unique_ptr<UblkQueue> worker;
    };

    Status open_queues(Backend& backend);
    /// Ends the serve loops: STOP_DEV, which aborts every fetch. Idempotent.
    void halt() noexcept;

    DeviceConfig cfg_;
    DeviceSetup setup_;
    std::optional<Control> control_;
    DeviceInfo info_;
    unique_fd char_fd_;
    std::unique_ptr<DeviceStats> stats_;
    std::vector<std::unique_ptr<Queue>> queues_;
    bool created_ = false;
    bool deleted_ = false;
    bool halted_ = false;
    bool ended_by_kernel_ = false; ///< serve() ended without our STOP_DEV: another stopped it
};

void UblkTransport::describe(Capabilities& caps) const {
    caps.set("kernel", "ublk_drv (upstream Linux; built out of tree from linux-source-6.1 when the "
                       "kernel lacks CONFIG_BLK_DEV_UBLK)");
    caps.set("module_loading", "the kernel's own ublk_drv if present or modprobe finds it, else "
                               "insmod of <build>/ublk/ublk_drv.ko (target ublk_kmod)");
    caps.set("control_device", kControlPath);
    caps.set("char_device", "/dev/ublkc<id>");
    caps.set("device", "/dev/ublkb<id>");
    caps.set("abi", "Linux 6.1 ublk_cmd.h: plain UBLK_CMD_*/UBLK_IO_* ops, no ioctl encoding");
    caps.set("thread_model", "one thread and one io_uring per queue");
    caps.set("requests", "io_uring URING_CMD: FETCH_REQ per tag; the request descriptors are "
                         "mmap()ed read-only from /dev/ublkc<id>");
    caps.set("completions", "COMMIT_AND_FETCH_REQ carries the answer and fetches the tag's next "
                            "request; one io_uring_enter submits a batch and waits");
    caps.set("data_path", "a buffer per tag in the daemon: the backend reads and writes it in "
                          "place, ublk_drv copies it to and from the bio pages (one copy)");
    caps.set_flag("batching", true);
    caps.set_flag("zero_copy", false);
    caps.set_flag("polling", false);
    caps.set_number("allocations_per_request", 0);
    caps.set_number("syscalls_per_batch", 1);
    caps.set("syscalls_per_request_qd1", "1 (io_uring_enter: submits the commit and sleeps until "
                                         "the next request)");
    caps.set_number("max_depth", UBLK_MAX_QUEUE_DEPTH);
    caps.set("max_queues", "the number of CPUs (ublk_drv lowers --queues to it)");
    caps.set("features", format_features(USERBLK_F_ALL));
    caps.set("request_timeout", "none: a request waits for a live daemon forever (6.1 has no "
                                "timeout handler); --timeout-ms is refused");
    caps.set("daemon_death", "ublk_drv's monitor (every 5 s, at once on the next request) fails "
                             "the requests in flight and stops the device");
    caps.set("delete",
             "userblk del --transport ublk ID (STOP_DEV, then DEL_DEV), or SIGTERM to the daemon");
    caps.set("queue_memory", "depth * max_io_bytes of buffers (backed lazily) + "
                             "PAGE_ALIGN(depth * 24) of descriptors mapped from the kernel + an "
                             "io_uring of depth entries");
}

Status UblkTransport::create(const DeviceConfig& cfg, Backend* backend) {
    if (backend == nullptr) {
        return Status::from_errno(EINVAL, "ublk: create failed", "a backend is required");
    }
    if (created_) {
        return Status::from_errno(EBUSY, "ublk: create failed", "this object has a device");
    }
    auto setup = make_setup(cfg, page_size());
    if (!setup.ok()) {
        return setup.status();
    }
    setup_ = setup.value();
    if (Status st = load_driver(); !st.ok()) {
        return st;
    }
    auto control = Control::open();
    if (!control.ok()) {
        return control.status();
    }
    if (Status st = control->add_dev(setup_.info); !st.ok()) {
        return st;
    }
    control_.emplace(std::move(control).value());
    created_ = true;
    cfg_ = cfg;
    info_ = info_from(setup_.info, setup_.params, cfg.features);

    Status st = control_->set_params(info_.id, setup_.params);
    if (st.ok()) {
        st = open_queues(*backend);
    }
    if (!st.ok()) {
        Status undo = destroy();
        if (!undo.ok()) {
            log_error("%s", undo.message().c_str());
        }
    }
    return st;
}

Status UblkTransport::open_queues(Backend& backend) {
    // ADD_DEV may have lowered the queues (to the CPUs) and rounded max I/O: read what is in force.
    auto got = control_->get_dev_info(info_.id);
    if (!got.ok()) {
        return got.status();
    }
    const ublksrv_ctrl_dev_info& di = got.value();
    if (di.nr_hw_queues == 0 || di.queue_depth == 0 || di.queue_depth > UBLK_MAX_QUEUE_DEPTH ||
        di.max_io_buf_bytes == 0 || di.max_io_buf_bytes % page_size() != 0) {
        return Status::from_errno(EPROTO,
                                  "ublk: GET_DEV_INFO of device " + std::to_string(info_.id),
                                  "it reports " + std::to_string(di.nr_hw_queues) +
                                      " queues of depth " + std::to_string(di.queue_depth) +
                                      ", max I/O " + std::to_string(di.max_io_buf_bytes));
    }
    info_ = info_from(di, setup_.params, cfg_.features);
    if (info_.nr_queues != cfg_.nr_queues || info_.queue_depth != cfg_.queue_depth) {
        log_error("ublk: device %u has %u queues of depth %u (asked for %u of %u): ublk_drv "
                  "allows at most one queue per CPU",
                  info_.id, info_.nr_queues, info_.queue_depth, cfg_.nr_queues, cfg_.queue_depth);
    }
    auto fd = open_char_device(info_.id);
    if (!fd.ok()) {
        return fd.status();
    }
    char_fd_ = std::move(fd).value();
    stats_ = std::make_unique<DeviceStats>(info_.nr_queues);
    for (unsigned i = 0; i < info_.nr_queues; ++i) {
        auto q = std::make_unique<Queue>();
        auto bq = BackendQueue::open(backend, i, info_.max_io_bytes, stats_->queue(i));
        if (!bq.ok()) {
            return bq.status();
        }
        q->backend_queue.emplace(std::move(bq).value());
        q->context = std::make_unique<QueueContext>(
            QueueContext{static_cast<std::uint16_t>(i), char_fd_.get(), info_, backend,
                         *q->backend_queue, stats_->queue(i)});
        auto worker = UblkQueue::create(*q->context);
        if (!worker.ok()) {
            return worker.status();
        }
        q->worker = std::move(worker).value();
        queues_.push_back(std::move(q));
    }
    return {};
}

void UblkTransport::halt() noexcept {
    if (halted_ || deleted_) {
        return;
    }
    halted_ = true;
    Status st = control_->stop_dev(info_.id);
    if (!st.ok() && st.error_number() != ENODEV) {
        log_error("ublk: cannot stop the device: %s", st.message().c_str());
    }
}

// The serve thread (the caller) does every control command (serve_queues): it waits until each
// queue's thread has fetched every tag, then START_DEV (which adds the disk, whose partition scan
// the queues serve), then until a queue ends or fails, or the stop; then STOP_DEV if the kernel has
// not ended the queues already, and joins them. A queue thread never issues STOP_DEV itself:
// STOP_DEV waits for the requests in flight, which a failed queue would never answer. A queue
// thread that returns while the device runs is noticed by ublk_drv's monitor, which fails its
// requests, so that STOP_DEV cannot wait forever either.
Status UblkTransport::serve(std::stop_token stop, const ReadyFn& ready) {
    if (!created_ || deleted_ || queues_.empty()) {
        return Status::from_errno(EINVAL, "ublk: serve failed", "no device was created");
    }
    QueueThreads spec{
        .name = "ublk",
        .nr_queues = static_cast<unsigned>(queues_.size()),
        .run = [this](unsigned i, const QueueThreads::Ready& fetched) {
            return queues_[i]->worker->run(fetched);
        },
        .start = [this] { return control_->start_dev(info_.id, ::getpid()); },
        .halt = [this] { halt(); },
    };
    return serve_queues(spec, stop, ready, info_, ended_by_kernel_);
}

Status UblkTransport::destroy() {
    // The rings, mappings and the char device go first: DEL_DEV waits until nothing refers to
    // the device any more, and our open /dev/ublkc<id> and its mappings do.
    queues_.clear();
    char_fd_.reset();
    if (!created_ || deleted_) {
        return {};
    }
    if (ended_by_kernel_) {
        // Someone else stopped the device. If that was a DEL_DEV it still runs, waiting for us
        // to let go of the device, and holds ublk_drv's control lock: a DEL_DEV of ours would wait
        // for that lock while holding a reference that DEL_DEV waits for. Leave it to them.
        deleted_ = true;
        auto got = control_->get_dev_info(info_.id);
        for (int i = 0; i < 100 && got.ok(); ++i) { // a DEL_DEV ends soon after we let go
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            got = control_->get_dev_info(info_.id);
        }
        if (got.ok()) {
            log_error("ublk: device %u was stopped by someone else; not deleting it (`userblk del "
                      "--transport ublk %u` does)",
                      info_.id, info_.id);
        }
        return {};
    }
    Status st = control_->del_dev(info_.id);
    if (st.ok() || st.error_number() == ENODEV) {
        deleted_ = true;
        return {};
    }
    return st;
}

} // namespace

const TransportEntry transport_entry_ublk{
    .name = "ublk",
    .kind = TransportKind::baseline,
    .summary = "baseline: upstream ublk_drv (io_uring URING_CMD: FETCH_REQ, COMMIT_AND_FETCH_REQ) served "
               "by our ublk server; a buffer per tag",
    .make = &make_transport<UblkTransport>,
    .remove = &remove_ublk_device,
};

Status remove_ublk_device(std::uint32_t id) {
    return ublk::remove_device(id);
}

} // namespace userblk
