// Kernel-only reference devices, created and torn down through the Transport interface so the
// harness treats them like any transport: `null_blk` (blk-mq with no user space, the per-I/O
// floor), `brd` (the RAM-disk ceiling) and `loop` over a tmpfs file (the kernel serving a file).
// They have no backend and no daemon work: serve() only waits for the stop.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/system.h"
#include "core/transport.h"

namespace userblk {

/// Their registry entries.
extern const TransportEntry transport_entry_null_blk;
extern const TransportEntry transport_entry_brd;
extern const TransportEntry transport_entry_loop;

namespace reference {

/// The common part: describe() and serve(); a derived class sets up and removes the device.
class KernelReference : public Transport {
public:
    void describe(Capabilities& caps) const override;
    Status serve(std::stop_token stop, const ReadyFn& ready) override;
    [[nodiscard]] DeviceInfo info() const override { return info_; }

protected:
    /// Appends the lines particular to this device (module, limits). Required.
    virtual void describe_device(Capabilities& caps) const = 0;

    DeviceInfo info_;
};

} // namespace reference
} // namespace userblk
