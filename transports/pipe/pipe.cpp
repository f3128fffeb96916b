#include "pipe.h"

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include <sys/ioctl.h>
#include <unistd.h>

#include "core/io.h"
#include "core/pipes.h"
#include "transports/desc/queue_loop.h"

namespace userblk {

namespace {

/// Extra fds beyond the pipes: stdio, the control device, logs, the stats file.
constexpr std::size_t kSpareFds = 64;

class PipeQueue final : public copy::DescQueue {
public:
    PipeQueue(KmodQueue& q, copy::QueueBuffers buffers, std::vector<Pipe> pipes,
              const FaultConfig& fault)
        : DescQueue(q, "pipe", std::move(buffers), fault), pipes_(std::move(pipes)) {}

private:
    int serve(const userblk_io_desc& d) noexcept override {
        if (d.tag >= pipes_.size()) {
            q_.stats.protocol_errors.add();
            note("request for a tag beyond the depth", EPROTO, d.tag);
            return -EIO;
        }
        const Pipe& p = pipes_[d.tag];
        // A WRITE's data waits in the pipe's read end; a READ's data goes to its write end.
        int fd = d.op == USERBLK_OP_READ ? p.w.get() : p.r.get();
        int res = execute_pipe(q_.backend, q_.backend_queue, d, fd);
        if (res != 0 && (d.op == USERBLK_OP_READ || d.op == USERBLK_OP_WRITE)) {
            // Leave the pipe empty for the tag's next request (the kernel takes nothing
            // from it for a failed READ, and a failed WRITE may have left data behind).
            if (drain_pipe(p.r.get()) > 0) {
                q_.stats.data_calls.add();
            }
        }
        return res;
    }

    // The short fault: the READ's data goes into the pipe, then half of it is taken out again,
    // so the kernel finds fewer bytes than len behind a result of 0.
    int serve_short(const userblk_io_desc& d) noexcept override {
        int res = serve(d);
        if (res != 0 || d.tag >= pipes_.size()) {
            return res;
        }
        std::span<std::byte> scratch = q_.backend_queue.buffer();
        std::size_t left = d.len / 2;
        while (left > 0 && !scratch.empty()) {
            ssize_t n =
                ::read(pipes_[d.tag].r.get(), scratch.data(), std::min(left, scratch.size()));
            if (n <= 0) {
                break;
            }
            left -= static_cast<std::size_t>(n);
        }
        return 0;
    }

    void discard(const userblk_io_desc& d) noexcept override {
        if (d.tag < pipes_.size() && drain_pipe(pipes_[d.tag].r.get()) > 0) {
            q_.stats.data_calls.add();
        }
    }

    std::vector<Pipe> pipes_;
};

class PipeTransport final : public KmodTransport {
public:
    PipeTransport() : KmodTransport(transport_entry_pipe) {}

private:
    void describe_mode(Capabilities& caps) const override {
        caps.set("requests", "read() on the queue fd, batched; descriptors only");
        caps.set("completions", "write() on the queue fd, batched; completions only");
        caps.set("data_path",
                 "a pipe per tag: the kernel writes a WRITE's data into it and reads "
                 "a READ's data from it; the backend splices it or the adapter copies");
        caps.set("kernel_copy", "kernel");
        caps.set_flag("batching", true);
        caps.set_flag("zero_copy", false);
        caps.set_flag("data_stays_in_kernel", true);
        caps.set_flag("polling", false);
        caps.set_flag("lend", true);
        // userblk.ko refuses USERBLK_F_RECOVERY here: the pipes and data fds would need
        // re-registering by a new daemon, which the module does not do yet.
        caps.set_flag("recovery", false);
        caps.set("lend_path", "--lend on: a WRITE's own pages go into its tag's pipe, read-only; "
                              "the request completes when answered and every lent buffer is "
                              "released");
        caps.set_number("syscalls_per_batch", 2);
        caps.set("fds", "2 * queues * depth + queues (a pipe per tag)");
        caps.set("faults", format_faults(kDescFaults));
    }

    Result<std::unique_ptr<KmodQueueWorker>> make_worker(KmodQueue& q) override {
        const DeviceInfo& dev = q.device;
        std::string what = "pipe: queue " + std::to_string(q.id);
        if (q.id == 0) {
            Status st =
                ensure_fd_limit(pipe_transport_fds(dev.nr_queues, dev.queue_depth) + kSpareFds,
                                "pipe: " + std::to_string(dev.nr_queues) + " queues x " +
                                    std::to_string(dev.queue_depth) + " depth");
            if (!st.ok()) {
                return st;
            }
        }
        auto buffers =
            copy::QueueBuffers::allocate(q, copy::desc_buffer_size(dev.queue_depth), "pipe");
        if (!buffers.ok()) {
            return buffers.status();
        }
        std::vector<Pipe> pipes;
        pipes.reserve(dev.queue_depth);
        for (std::uint32_t tag = 0; tag < dev.queue_depth; ++tag) {
            auto p = Pipe::make(dev.max_io_bytes, what + " tag " + std::to_string(tag));
            if (!p.ok()) {
                return p.status();
            }
            userblk_pipe_set ps{};
            ps.tag = tag;
            ps.read_fd = p.value().r.get();
            ps.write_fd = p.value().w.get();
            if (::ioctl(q.fd, USERBLK_IOC_PIPE_SET, &ps) != 0) {
                return Status::from_errno(errno, what + ": PIPE_SET of tag " + std::to_string(tag) +
                                                     " failed");
            }
            pipes.push_back(std::move(p).value());
        }
        return std::unique_ptr<KmodQueueWorker>(
            new PipeQueue(q, std::move(buffers).value(), std::move(pipes), config().fault));
    }
};

} // namespace

const TransportEntry transport_entry_pipe{
    .name = "pipe",
    .kind = TransportKind::userblk,
    .mode = USERBLK_MODE_PIPE,
    .summary = "descriptors as copy; a pipe per tag carries the data, which the backend can splice "
               "without touching it",
    .make = &make_transport<PipeTransport>,
};

} // namespace userblk
