// The nbdkit reference: Debian's nbdkit behind the same kernel nbd device as the nbd transport,
// the off-the-shelf server to hold our own NBD server against. It serves the backend named by
// --backend with a plugin of its own (ram: `memory size=N allocator=malloc`, a flat array like
// our ram backend, as the default sparse allocator takes a lock per request; null: `null
// size=N`); no Backend object is made.
//
// nbdkit is started by socket activation: the daemon makes the listening socket (a UNIX socket
// with an abstract name, or TCP on 127.0.0.1 with --socket tcp) and hands it over as fd 3
// (LISTEN_FDS=1), so the socket accepts connections before nbdkit runs and there is nothing to
// wait for or clean up in the file system; --exit-with-parent ends nbdkit with the daemon (it
// follows the thread that ran create(): the CLI's main thread). Each queue's connection is
// made, negotiated in user space (NBD_OPT_GO) and handed to the driver as for nbd. destroy()
// disconnects the device, then stops nbdkit (SIGTERM, SIGKILL after 5 s).
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>

#include <unistd.h>

#include "nbd/client.h"
#include "core/capabilities.h"
#include "core/log.h"
#include "nbd/device.h"
#include "nbdkit.h"
#include "nbd/nbdkit.h"
#include "nbd/sockets.h"

namespace userblk {

namespace nbd {

std::optional<std::string_view> nbdkit_plugin(std::string_view backend) noexcept {
    if (backend == "ram") {
        return "memory";
    }
    if (backend == "null") {
        return "null";
    }
    return std::nullopt;
}

Result<std::vector<std::string>> nbdkit_command(std::string_view backend, std::uint64_t size) {
    auto plugin = nbdkit_plugin(backend);
    if (!plugin) {
        return Status::from_errno(EINVAL, "nbdkit: backend '" + std::string(backend) + "'",
                                  "nbdkit serves ram (its memory plugin) and null (its null "
                                  "plugin)");
    }
    std::vector<std::string> argv = {"nbdkit", "--foreground", "--exit-with-parent",
                                     std::string(*plugin), "size=" + std::to_string(size)};
    if (*plugin == "memory") {
        argv.emplace_back("allocator=malloc");
    }
    return argv;
}

} // namespace nbd

namespace {

constexpr std::array<std::string_view, 2> kNbdkitBackends = {"null", "ram"};

class NbdkitTransport final : public Transport {
public:
    ~NbdkitTransport() override { (void)destroy(); }

    void describe(Capabilities& caps) const override {
        caps.set("backend", "by name, served by nbdkit's own plugins: ram -> memory "
                            "(allocator=malloc, a flat array), null -> null; no Backend object");
        caps.set("daemon", "nbdkit (Debian's), a child of userblk add started by socket "
                           "activation with --exit-with-parent; userblk add only sets up the "
                           "device and waits");
        nbd::describe_kernel_side(caps);
        caps.set("server", "nbdkit: its own threads (16 per connection by default), requests "
                           "served in parallel");
        caps.set("data_path", "NBD over the socket into nbdkit's memory and back, as for nbd");
        caps.set_flag("data_stays_in_kernel", false);
        caps.set_flag("zero_copy", false);
        caps.set_flag("polling", false);
    }


    Status create(const DeviceConfig& cfg, Backend* /*backend: served by nbdkit itself*/) override {
        if (dev_) {
            return Status::from_errno(EBUSY, "nbdkit: create failed", "a device exists already");
        }
        auto argv = nbd::nbdkit_command(cfg.backend, cfg.size);
        if (!argv.ok()) {
            return argv.status();
        }
        auto setup = nbd::kernel_setup(cfg, "nbdkit");
        if (!setup.ok()) {
            return setup.status();
        }
        auto listener = nbd::Listener::make(cfg.socket, "nbdkit");
        if (!listener.ok()) {
            return listener.status();
        }
        nbd::Listener& l = listener.value();
        if (Status st = server_.start(argv.value(), std::move(l.fd)); !st.ok()) {
            return st;
        }
        std::vector<unique_fd> clients;
        std::uint16_t flags = 0;
        for (unsigned i = 0; i < cfg.nr_queues; ++i) {
            const std::string who = "nbdkit: connection " + std::to_string(i);
            auto fd = l.connect(who);
            if (!fd.ok()) {
                return failed(fd.status());
            }
            if (Status st = nbd::set_timeouts(fd->get(), nbd::kHandshakeTimeoutMs, who); !st.ok()) {
                return failed(st);
            }
            auto info = nbd::handshake(fd->get(), "", who + ": nbdkit on " + l.address());
            if (!info.ok()) {
                return failed(info.status());
            }
            if (info->size < cfg.size) {
                return failed(Status::from_errno(ENOSPC, who + ": nbdkit's export is too small",
                                                 std::to_string(info->size) + " bytes"));
            }
            if (Status st = nbd::set_timeouts(fd->get(), 0, who); !st.ok()) {
                return failed(st);
            }
            flags = info->flags;
            clients.push_back(std::move(fd).value());
        }
        if (cfg.nr_queues > 1 && (flags & nbd::kFlagCanMultiConn) == 0) {
            return failed(Status::from_errno(EINVAL, "nbdkit: several connections",
                                             "its plugin does not offer multi-conn; use "
                                             "--queues 1"));
        }
        setup->flags = nbd::kernel_flags(flags, cfg.features);
        auto dev = nbd::KernelDevice::attach(std::move(clients), setup.value(), "nbdkit");
        if (!dev.ok()) {
            return failed(dev.status());
        }
        dev_ = std::move(dev).value();
        info_ = nbd::device_info(*dev_, cfg, setup.value());
        return {};
    }

    Status serve(std::stop_token stop, const ReadyFn& ready) override {
        if (!dev_) {
            return Status::from_errno(EINVAL, "nbdkit: serve failed", "no device was created");
        }
        if (Status st = dev_->start(10000); !st.ok()) {
            return st;
        }
        ready(info_);
        if (dev_->wait(stop)) {
            std::string why = dev_->end_reason();
            std::string server = server_.ended();
            if (!server.empty()) {
                log_error("nbdkit: %s ended: nbdkit %s", info_.path.c_str(), server.c_str());
            } else if (!why.empty()) {
                log_error("nbdkit: %s ended: %s", info_.path.c_str(), why.c_str());
            }
        } else if (!dev_->stop(std::chrono::milliseconds(5000))) {
            log_error("nbdkit: %s did not disconnect", info_.path.c_str());
        }
        return {};
    }

    Status destroy() override {
        Status st;
        if (dev_) {
            st = dev_->release();
            dev_.reset();
        }
        server_.stop();
        return st;
    }

    [[nodiscard]] DeviceInfo info() const override { return info_; }

private:
    /// A setup failure: says so if nbdkit is gone, and stops it.
    Status failed(const Status& st) {
        std::string why = server_.ended();
        server_.stop();
        if (why.empty()) {
            return st;
        }
        return Status::from_errno(st.error_number(), st.message(), "nbdkit " + why);
    }

    nbd::NbdkitProcess server_;
    DeviceInfo info_;
    std::unique_ptr<nbd::KernelDevice> dev_;
};

} // namespace

const TransportEntry transport_entry_nbdkit{
    .name = "nbdkit",
    .kind = TransportKind::reference,
    .summary = "reference: Linux's nbd driver connected to Debian's nbdkit (memory plugin for ram, null "
               "for null)",
    .make = &make_transport<NbdkitTransport>,
    .remove = &remove_nbd_device,
    .backends = BackendUse::own,
    .own_backends = kNbdkitBackends,
};

} // namespace userblk
