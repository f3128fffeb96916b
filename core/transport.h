// The Transport interface: how a device's requests and their data cross the kernel/user boundary.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stop_token>
#include <string_view>

#include "backend.h"
#include "capabilities.h"
#include "config.h"
#include "stats.h"
#include "status.h"

namespace userblk {

/// Called once by Transport::serve() when every queue is being served and the device is visible.
using ReadyFn = std::function<void(const DeviceInfo&)>;

/// One transport instance serves one device: the registry makes a fresh object per device (and
/// one to describe the transport). The life of a device is create() -> serve() -> destroy().
/// Nothing here throws; failures come back as a Status naming the object and the cause.
class Transport {
public:
    Transport() = default;
    Transport(const Transport&) = delete;
    Transport& operator=(const Transport&) = delete;
    virtual ~Transport() = default;

    /// Appends key=value capability lines for `userblk --dump-transport` (after name=). Required.
    virtual void describe(Capabilities& caps) const = 0;
    /// Creates the device for cfg, to be served by backend (nullptr exactly when the entry's
    /// backends is not BackendUse::object); not yet visible or served. Required.
    virtual Status create(const DeviceConfig& cfg, Backend* backend) = 0;
    /// Serves every queue, one thread per queue, makes the device visible, calls ready, and returns
    /// once the device is dead or stop is requested and all threads are joined. Required.
    virtual Status serve(std::stop_token stop, const ReadyFn& ready) = 0;
    /// Removes the device; idempotent, and run by the destructor of a created device. Required.
    virtual Status destroy() = 0;

    /// The device's identity and values in force, after create(). Optional: default empty.
    [[nodiscard]] virtual DeviceInfo info() const;
    /// Per-queue statistics, after create(). Optional: default none (nullptr).
    [[nodiscard]] virtual const DeviceStats* stats() const;
};

/// How a transport's requests reach their data: a field of its registry entry, which
/// `userblk add` reads to know what --backend means for it.
enum class BackendUse {
    object, ///< through a Backend object that `userblk add --backend` makes (every transport
            ///< under study and every baseline)
    none,   ///< nowhere in user space: a kernel-only reference device; no --backend
    own,    ///< by name, with a server of its own (nbdkit's plugins): --backend names one of
            ///< the entry's own_backends, without options; create() reads DeviceConfig::backend
};

/// "object", "none" or "own" (`backend_use=` in `userblk --dump-transport`).
std::string_view backend_use_name(BackendUse use) noexcept;

/// What a transport is to the study: a typed field of its registry entry (`kind=` in
/// `userblk --dump-transport`), which the harness, the plots and the tests read.
enum class TransportKind {
    userblk,   ///< a mode of userblk.ko, one of the transports under study (transports/)
    baseline,  ///< an upstream kernel driver served by our code on a Backend (baselines/)
    reference, ///< a device to measure against, not served by a Backend (references/)
};

/// "userblk", "baseline" or "reference".
std::string_view kind_name(TransportKind kind) noexcept;

/// An entry's factory: a fresh T.
template <class T>
std::unique_ptr<Transport> make_transport() {
    return std::make_unique<T>();
}

/// One transport as the registry lists it. Each is defined once, in its own folder, as
/// `transport_entry_<name>`; cli/CMakeLists.txt generates the registry's table from the names
/// in USERBLK_KMOD_TRANSPORTS, USERBLK_BASELINES and USERBLK_REFERENCES. The name is the one
/// string used everywhere: TRANSPORT=, the folder, the results key.
struct TransportEntry {
    std::string_view name;
    TransportKind kind = TransportKind::userblk;
    /// The userblk.ko mode (USERBLK_MODE_* of the uapi) of a userblk transport; 0 for others.
    std::uint32_t mode = 0;
    std::string_view summary;             ///< one line for --dump-transport
    std::unique_ptr<Transport> (*make)(); ///< a fresh object, for one device
    /// Deletes device id from outside its daemon (`userblk del --transport NAME ID`), for a
    /// transport whose devices are not userblk.ko's (ublk). Optional: nullptr = userblk.ko's
    /// DEL_DEV.
    Status (*remove)(std::uint32_t id) = nullptr;
    BackendUse backends = BackendUse::object;
    /// With BackendUse::own: the backend names it serves itself (nbdkit: "null", "ram").
    std::span<const std::string_view> own_backends = {};
};

} // namespace userblk
