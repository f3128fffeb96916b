// The nbd transport: Linux's nbd driver connected to our own NBD server (server.h) on the
// device's Backend, one connection per queue.
//
// create(): per queue, a connected socket pair (UNIX by default, TCP over 127.0.0.1 with
// `--socket tcp`); the server's end gets a ServerConnection (its own BackendQueue and buffers),
// and the handshake runs over the pair, the server's side on a short-lived thread and the
// client's side (nbd/client.h) here; then the client ends go to the driver (nbd/kernel.h).
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

#include "nbd/client.h"
#include "core/capabilities.h"
#include "core/log.h"
#include "nbd/device.h"
#include "nbd/server.h"
#include "nbd/sockets.h"

namespace userblk {

namespace {

using nbd::describe_kernel_side;
using nbd::KernelDevice;
using nbd::ServerConnection;

class NbdTransport final : public Transport {
public:
    ~NbdTransport() override { (void)destroy(); }

    void describe(Capabilities& caps) const override {
        describe_kernel_side(caps);
        caps.set("server", "ours (nbd/server.cpp) on the Backend: one thread and "
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

const TransportEntry transport_entry_nbd{
    .name = "nbd",
    .kind = TransportKind::baseline,
    .summary = "baseline: Linux's nbd driver over a UNIX socket pair (or TCP) per queue to our NBD "
               "server on the Backend",
    .make = &make_transport<NbdTransport>,
    .remove = &remove_nbd_device,
};

} // namespace userblk
