// A test double of a fifth userblk.ko transport: an entry and a Transport that describes itself
// and refuses to make a device (it has no kernel half). tests/registry/CMakeLists.txt adds it
// to a second registry and program exactly as transports/CMakeLists.txt adds a real one, and
// test_double.py shows that the lists, the harness's plan and the VM suite's test names take
// it up with no other edit.
#include <cerrno>

#include "core/transport.h"
#include "uapi/userblk.h"

namespace userblk {
namespace {

class DoubleTransport final : public Transport {
public:
    void describe(Capabilities& caps) const override {
        caps.set("requests", "none: a test double of the registry, with no kernel half");
    }
    Status create(const DeviceConfig& /*cfg*/, Backend* /*backend*/) override { return refuse(); }
    Status serve(std::stop_token /*stop*/, const ReadyFn& /*ready*/) override { return refuse(); }
    Status destroy() override { return {}; }

private:
    static Status refuse() {
        return Status::from_errno(ENOSYS, "double",
                                  "a test double of the registry serves no device");
    }
};

} // namespace

extern const TransportEntry transport_entry_double; // the generated table declares it so
const TransportEntry transport_entry_double{
    .name = "double",
    .kind = TransportKind::userblk,
    // Past the last mode of userblk.ko: the double has no kernel half, and the kernel refuses
    // this number at ADD_DEV.
    .mode = USERBLK_MODE_END,
    .summary = "a test double that shows what registering a transport changes",
    .make = &make_transport<DoubleTransport>,
};

} // namespace userblk
