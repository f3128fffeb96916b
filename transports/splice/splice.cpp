#include "splice.h"

#include <cerrno>
#include <string>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/io.h"
#include "core/pipes.h"
#include "transports/desc/queue_loop.h"

namespace userblk {

namespace {

class SpliceQueue final : public copy::DescQueue {
public:
    SpliceQueue(KmodQueue& q, copy::QueueBuffers buffers, unique_fd data, Pipe pipe,
                const FaultConfig& fault)
        : DescQueue(q, "splice", std::move(buffers), fault), data_(std::move(data)),
          pipe_(std::move(pipe)), native_(q.backend.native_pipe()) {}

private:
    int serve(const userblk_io_desc& d) noexcept override {
        if (d.op != USERBLK_OP_READ && d.op != USERBLK_OP_WRITE) {
            return execute(q_.backend, q_.backend_queue, d, {});
        }
        if (d.len > q_.device.max_io_bytes) {
            return execute(q_.backend, q_.backend_queue, d, {}); // answers -EINVAL, counted
        }
        return native_ ? serve_piped(d) : serve_buffered(d);
    }

    // The short fault: the READ's data is read into the daemon's buffer and only its first half
    // is written to the data fd, so the kernel finds fewer bytes than len behind a result of 0.
    int serve_short(const userblk_io_desc& d) noexcept override {
        if (d.op != USERBLK_OP_READ || d.len > q_.device.max_io_bytes || d.len < 2) {
            return serve(d);
        }
        std::span<std::byte> buf = q_.backend_queue.buffer().first(d.len);
        int res = execute(q_.backend, q_.backend_queue, d, buf);
        if (res != 0) {
            return res;
        }
        (void)transfer(true, buf.first(d.len / 2), USERBLK_SPLICE_OFF(d.tag, d.gen, 0), d.tag);
        return 0;
    }

    /// data fd <-> pipe <-> backend, by splice only.
    int serve_piped(const userblk_io_desc& d) noexcept {
        QueueStats& s = q_.stats;
        loff_t off = static_cast<loff_t>(USERBLK_SPLICE_OFF(d.tag, d.gen, 0));
        std::size_t calls = 0;
        int res;
        if (d.op == USERBLK_OP_WRITE) {
            res = splice_exact(data_.get(), &off, pipe_.w.get(), nullptr, d.len, SPLICE_F_MOVE,
                               &calls);
            s.data_calls.add(calls);
            if (res != 0) {
                note("splice from the data fd failed", -res, d.tag);
                res = -EIO;
                s.count_request(d.op, d.len);
                s.io_errors.add();
            } else {
                res = execute_pipe(q_.backend, q_.backend_queue, d, pipe_.r.get());
            }
        } else {
            res = execute_pipe(q_.backend, q_.backend_queue, d, pipe_.w.get());
            if (res == 0) {
                res = splice_exact(pipe_.r.get(), nullptr, data_.get(), &off, d.len, SPLICE_F_MOVE,
                                   &calls);
                s.data_calls.add(calls);
                if (res != 0) {
                    note("splice into the data fd failed", -res, d.tag);
                    res = -EIO;
                    s.io_errors.add();
                }
            }
        }
        if (res != 0 && drain_pipe(pipe_.r.get()) > 0) {
            s.data_calls.add();
        }
        return res;
    }

    /// data fd <-> the daemon's buffer <-> backend (one copy each way, as copy).
    int serve_buffered(const userblk_io_desc& d) noexcept {
        QueueStats& s = q_.stats;
        const std::uint64_t off = USERBLK_SPLICE_OFF(d.tag, d.gen, 0);
        std::span<std::byte> buf = q_.backend_queue.buffer().first(d.len);
        if (d.op == USERBLK_OP_WRITE) {
            if (int r = transfer(false, buf, off, d.tag); r != 0) {
                s.count_request(d.op, d.len);
                s.io_errors.add();
                return r;
            }
            return execute(q_.backend, q_.backend_queue, d, buf);
        }
        int res = execute(q_.backend, q_.backend_queue, d, buf);
        if (res == 0) {
            res = transfer(true, buf, off, d.tag);
            if (res != 0) {
                s.io_errors.add();
            }
        }
        return res;
    }

    /// pread (write=false) or pwrite the whole of buf at off of the data fd.
    int transfer(bool write, std::span<std::byte> buf, std::uint64_t off,
                 std::uint16_t tag) noexcept {
        std::uint64_t calls = 0;
        int r = pio_exact(data_.get(), buf, off, write, &calls);
        q_.stats.data_calls.add(calls);
        if (r != 0) {
            note(write ? "pwrite on the data fd failed" : "pread on the data fd failed", -r, tag);
            return -EIO;
        }
        return 0;
    }

    unique_fd data_;
    Pipe pipe_;
    bool native_;
};

class SpliceTransport final : public KmodTransport {
public:
    SpliceTransport() : KmodTransport(transport_entry_splice) {}

private:
    void describe_mode(Capabilities& caps) const override {
        caps.set("requests", "read() on the queue fd, batched; descriptors only");
        caps.set("completions", "write() on the queue fd, batched; completions only");
        caps.set("data_path",
                 "a data fd per queue addressed by tag: spliced through a pipe to the backend's "
                 "file or socket (native pipe backends), else pread/pwrite into the daemon");
        // Spliced through a pipe (kernel pages) where the backend takes pipes, else pread/pwrite.
        caps.set("kernel_copy", "kernel if the backend has native_pipe=1, else user");
        caps.set_flag("batching", true);
        caps.set_flag("zero_copy", false);
        caps.set_flag("data_stays_in_kernel", true);
        caps.set_flag("polling", false);
        caps.set_flag("lend", true);
        // userblk.ko refuses USERBLK_F_RECOVERY here: the pipes and data fds would need
        // re-registering by a new daemon, which the module does not do yet.
        caps.set_flag("recovery", false);
        caps.set("lend_path", "--lend on: splice from the data fd puts a WRITE's own pages into "
                              "the pipe, read-only; the request completes when answered and every "
                              "lent buffer is released");
        caps.set_number("syscalls_per_batch", 2);
        caps.set("fds", "4 * queues (queue fd, data fd, a pipe)");
        caps.set("faults", format_faults(kDescFaults));
    }

    Result<std::unique_ptr<KmodQueueWorker>> make_worker(KmodQueue& q) override {
        std::string what = "splice: queue " + std::to_string(q.id);
        auto buffers =
            copy::QueueBuffers::allocate(q, copy::desc_buffer_size(q.device.queue_depth), "splice");
        if (!buffers.ok()) {
            return buffers.status();
        }
        int fd = ::ioctl(q.fd, USERBLK_IOC_SPLICE_DATA_FD, 0);
        if (fd < 0) {
            return Status::from_errno(errno, what + ": SPLICE_DATA_FD failed");
        }
        unique_fd data(fd);
        auto pipe = Pipe::make(q.device.max_io_bytes, what);
        if (!pipe.ok()) {
            return pipe.status();
        }
        return std::unique_ptr<KmodQueueWorker>(
            new SpliceQueue(q, std::move(buffers).value(), std::move(data), std::move(pipe).value(),
                            config().fault));
    }
};

} // namespace

const TransportEntry transport_entry_splice{
    .name = "splice",
    .kind = TransportKind::userblk,
    .mode = USERBLK_MODE_SPLICE,
    .summary =
        "descriptors as copy; a data fd addressed by tag, spliced to the backend's file or socket "
        "so forwarded data never enters the daemon",
    .make = &make_transport<SpliceTransport>,
};

} // namespace userblk
