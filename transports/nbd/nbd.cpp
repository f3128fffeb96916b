// The nbd transport: Linux's nbd driver connected to our own NBD server (server.h) on the
// device's Backend, one connection per queue.
//
// create(): per queue, a connected socket pair (UNIX by default, TCP over 127.0.0.1 with
// `--socket tcp`); the server's end gets a ServerConnection (its own BackendQueue and buffers),
// and the handshake runs over the pair, the server's side on a short-lived thread and the
// client's side (nbd_client.h) here; then the client ends go to the driver (kernel.h).
// serve(): one thread per connection serving requests, NBD_DO_IT in a child process, ready once
// the disk shows its size; it returns when the device ends (NBD_DO_IT returned: `userblk del`,
// a timeout, the driver giving up) or on stop, after NBD_DISCONNECT: the driver sends
// NBD_CMD_DISC on every connection, each server thread answers what came before it and closes.
// destroy(): NBD_CLEAR_SOCK and close; the backend queues go with the connections.
#include "nbd.h"

#include <algorithm>
#include <cerrno>
#include <optional>
#include <thread>

#include "backends/nbd_client.h"
#include "core/capabilities.h"
#include "core/log.h"
#include "server.h"
#include "sockets.h"

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

namespace {

using nbd::describe_kernel_side;
using nbd::KernelDevice;
using nbd::ServerConnection;

class NbdTransport final : public Transport {
public:
    ~NbdTransport() override { (void)destroy(); }

    void describe(Capabilities& caps) const override {
        caps.set("kind", "baseline");
        describe_kernel_side(caps);
        caps.set("server", "ours (transports/nbd/server.cpp) on the Backend: one thread and "
                           "one connection per queue, requests served in order");
        caps.set("multi_conn", "offered when the backend says multi_conn=1 (null, ram, file)");
        caps.set("data_path", "NBD over the socket: the driver sends each request and a write's "
                              "data, the server receives them into its memory and calls the "
                              "backend, and sends the reply with a read's data back");
        caps.set_flag("data_stays_in_kernel", false);
        caps.set_flag("zero_copy", false);
        caps.set("batching", "receive: one recv() takes every request sent so far; replies "
                             "without data wait for the next read's reply or the next recv()");
        caps.set_flag("polling", false);
        caps.set("syscalls_per_batch", "1 recv + 1 sendmsg");
        caps.set("memory_per_queue", "256K receive buffer + a 32M data buffer (reserved, backed "
                                     "on first use) + the socket buffers");
    }

    Status create(const DeviceConfig& cfg, Backend* backend) override {
        if (dev_) {
            return Status::from_errno(EBUSY, "nbd: create failed", "a device exists already");
        }
        if (backend == nullptr) {
            return Status::from_errno(EINVAL, "nbd: create failed", "no backend");
        }
        auto setup = nbd::kernel_setup(cfg, "nbd");
        if (!setup.ok()) {
            return setup.status();
        }
        const bool multi = nbd::backend_multi_conn(*backend);
        if (cfg.nr_queues > 1 && !multi) {
            return Status::from_errno(EINVAL,
                                      "nbd: " + std::to_string(cfg.nr_queues) +
                                          " connections need a backend that is safe for several",
                                      "it does not say multi_conn=1 (--dump-backend): a flush on "
                                      "one connection might not cover the others; use --queues 1");
        }
        nbd::ServerConfig scfg;
        scfg.size = cfg.size;
        scfg.flags = nbd::transmission_flags(cfg.features, multi);
        scfg.preferred_block = std::max<std::uint32_t>(4096, cfg.block_size);
        scfg.max_payload = nbd::kKernelMaxIo; // the most the driver ever sends
        auto stats = std::make_unique<DeviceStats>(cfg.nr_queues);
        std::vector<std::unique_ptr<ServerConnection>> conns;
        std::vector<unique_fd> clients;
        std::uint16_t flags = 0;
        for (unsigned i = 0; i < cfg.nr_queues; ++i) {
            const std::string who = "nbd: connection " + std::to_string(i);
            auto pair = nbd::connected_pair(cfg.socket, who);
            if (!pair.ok()) {
                return pair.status();
            }
            auto [client, server_end] = std::move(pair).value();
            auto conn =
                ServerConnection::open(std::move(server_end), scfg, *backend, i, stats->queue(i));
            if (!conn.ok()) {
                return conn.status();
            }
            auto info = handshake(*conn.value(), client.get(), who);
            if (!info.ok()) {
                return info.status();
            }
            flags = info->flags;
            conns.push_back(std::move(conn).value());
            clients.push_back(std::move(client));
        }
        setup->flags = nbd::kernel_flags(flags, cfg.features);
        auto dev = KernelDevice::attach(std::move(clients), setup.value(), "nbd");
        if (!dev.ok()) {
            return dev.status();
        }
        dev_ = std::move(dev).value();
        conns_ = std::move(conns);
        stats_ = std::move(stats);
        info_ = nbd::device_info(*dev_, cfg, setup.value());
        return {};
    }

    Status serve(std::stop_token stop, const ReadyFn& ready) override {
        if (!dev_) {
            return Status::from_errno(EINVAL, "nbd: serve failed", "no device was created");
        }
        try {
            for (auto& c : conns_) {
                threads_.emplace_back([conn = c.get()](std::stop_token st) {
                    if (Status s = conn->serve(st); !s.ok()) {
                        log_error("%s", s.message().c_str());
                    }
                });
            }
        } catch (const std::system_error& e) {
            stop_connections();
            return Status::from_errno(e.code().value(), "nbd: cannot start a connection thread");
        }
        if (Status st = dev_->start(10000); !st.ok()) {
            stop_connections();
            return st;
        }
        ready(info_);
        if (dev_->wait(stop)) {
            if (std::string why = dev_->end_reason(); !why.empty()) {
                log_error("nbd: %s ended: %s", info_.path.c_str(), why.c_str());
            }
        } else if (!dev_->stop(std::chrono::milliseconds(5000))) {
            log_error("nbd: %s did not disconnect", info_.path.c_str());
        }
        stop_connections();
        return {};
    }

    Status destroy() override {
        stop_connections();
        Status st;
        if (dev_) {
            st = dev_->release();
            dev_.reset();
        }
        conns_.clear();
        return st;
    }

    [[nodiscard]] DeviceInfo info() const override { return info_; }
    [[nodiscard]] const DeviceStats* stats() const override { return stats_.get(); }

private:
    /// The handshake over one pair: the server's side on a thread, the client's here.
    static Result<nbd::ExportInfo> handshake(ServerConnection& server, int client,
                                             const std::string& who) {
        if (Status st = nbd::set_timeouts(client, nbd::kHandshakeTimeoutMs, who); !st.ok()) {
            return st;
        }
        std::optional<Result<nbd::Negotiated>> served;
        std::optional<Result<nbd::ExportInfo>> info;
        try {
            std::jthread side([&] {
                served.emplace(server.negotiate());
                if (!served->ok() || served->value() != nbd::Negotiated::transmission) {
                    server.shutdown(); // the client must not wait for an answer
                }
            });
            info.emplace(nbd::handshake(client, "", who + ": our NBD server"));
            if (!info->ok()) {
                server.shutdown(); // the server may wait for another option
            }
        } catch (const std::system_error& e) {
            return Status::from_errno(e.code().value(), who + ": cannot start the handshake");
        }
        if (!served->ok()) {
            return served->status();
        }
        if (!info->ok()) {
            return info->status();
        }
        if (Status st = nbd::set_timeouts(client, 0, who); !st.ok()) {
            return st;
        }
        return info->value();
    }

    void stop_connections() noexcept {
        for (auto& t : threads_) {
            t.request_stop(); // shuts the connection's socket down
        }
        threads_.clear(); // joins
    }

    DeviceInfo info_;
    std::unique_ptr<DeviceStats> stats_;
    std::unique_ptr<KernelDevice> dev_;
    std::vector<std::unique_ptr<ServerConnection>> conns_;
    std::vector<std::jthread> threads_; ///< after conns_: joined before they go
};

} // namespace

std::unique_ptr<Transport> make_nbd_transport() {
    return std::make_unique<NbdTransport>();
}

} // namespace userblk
