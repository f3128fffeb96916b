// brd, the kernel's RAM disk: a bio-based driver whose size is a module parameter, so the
// module is loaded for the device and unloaded to remove it. Queues, depth and I/O size are not
// configurable; they are the kernel's.
#include <unistd.h>

#include <cerrno>
#include <string>

#include "core/module.h"
#include "core/capabilities.h"
#include "reference.h"

namespace userblk {
namespace {

class Brd final : public reference::KernelReference {
public:
    ~Brd() override { (void)destroy(); }

    Status create(const DeviceConfig& cfg, Backend* /*backend*/) override {
        if (cfg.size == 0 || cfg.size % 1024 != 0) {
            return Status::from_errno(EINVAL, "brd: size " + std::to_string(cfg.size),
                                      "brd sizes are whole KiB");
        }
        if (::access("/sys/module/brd", F_OK) == 0) {
            return Status::from_errno(EBUSY, "brd: the module is loaded already",
                                      "its size is fixed at load time: remove its devices and "
                                      "'rmmod brd' first");
        }
        if (Status st = load_module(
                {.name = "brd",
                 .params = {"rd_nr=1", "max_part=0", "rd_size=" + std::to_string(cfg.size / 1024)},
                 .built = {},
                 .ready_path = "/dev/ram0",
                 .hint = {}});
            !st.ok()) {
            return st;
        }
        loaded_ = true;
        info_.id = 0;
        info_.path = "/dev/ram0";
        info_.size = cfg.size;
        info_.block_size = 512;
        info_.nr_queues = 1;
        info_.queue_depth = 0;
        return wait_for_path(info_.path, 5000);
    }

    Status destroy() override {
        if (!loaded_) {
            return {};
        }
        loaded_ = false;
        return run_command({"rmmod", "brd"});
    }

private:
    void describe_device(Capabilities& caps) const override {
        caps.set("module", "brd");
        caps.set("setup", "modprobe brd rd_nr=1 rd_size=<size in KiB>; removed with rmmod");
        caps.set("device", "/dev/ram0");
        caps.set("data", "memory: the RAM-disk ceiling");
        caps.set("limits", "bio-based: --queues, --depth, --max-io and --block-size are ignored");
    }

    bool loaded_ = false;
};

} // namespace

const TransportEntry transport_entry_brd{
    .name = "brd",
    .kind = TransportKind::reference,
    .summary = "reference: the kernel's RAM disk (the memory ceiling)",
    .make = &make_transport<Brd>,
    .backends = BackendUse::none,
};

} // namespace userblk
