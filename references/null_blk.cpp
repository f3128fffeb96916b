// null_blk through configfs: blk-mq, requests completed in the submitter's context (irqmode=0),
// no memory behind it (memory_backed=0). Its limits follow the config so that a comparison with
// a userblk device splits large I/O the same way (max_sectors, see docs/platform.md).
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "core/module.h"
#include "core/capabilities.h"
#include "reference.h"

namespace userblk {
namespace {

constexpr const char* kConfigfs = "/sys/kernel/config/nullb";
constexpr std::uint32_t kDefaultMaxIo = 512 * 1024; // userblk.ko's default, for equal splits
constexpr std::uint64_t kMiB = 1024 * 1024;

class NullBlk final : public reference::KernelReference {
public:
    ~NullBlk() override { (void)destroy(); }

    Status create(const DeviceConfig& cfg, Backend* /*backend*/) override {
        if (cfg.size == 0 || cfg.size % kMiB != 0) {
            return Status::from_errno(EINVAL, "null_blk: size " + std::to_string(cfg.size),
                                      "null_blk sizes are whole MiB");
        }
        if (Status st = load_module({.name = "null_blk",
                                                     .params = {"nr_devices=0"},
                                                     .built = {},
                                                     .ready_path = {},
                                                     .hint = {}});
            !st.ok()) {
            return st;
        }
        struct stat sb {};
        if (::stat(kConfigfs, &sb) != 0) {
            return Status::from_errno(errno, std::string("null_blk: ") + kConfigfs,
                                      "is configfs mounted on /sys/kernel/config?");
        }
        std::uint32_t n = 0;
        for (; n < 1024; n++) {
            name_ = "nullb" + std::to_string(n);
            if (::access(("/dev/" + name_).c_str(), F_OK) != 0 &&
                ::mkdir((std::string(kConfigfs) + "/" + name_).c_str(), 0755) == 0) {
                break;
            }
        }
        if (n == 1024) {
            return Status::from_errno(ENOSPC, "null_blk: no free device name");
        }
        dir_ = std::string(kConfigfs) + "/" + name_;
        std::uint32_t max_io = cfg.max_io_bytes != 0 ? cfg.max_io_bytes : kDefaultMaxIo;
        const std::pair<const char*, std::string> attrs[] = {
            {"queue_mode", "2"},
            {"irqmode", "0"},
            {"memory_backed", "0"},
            {"size", std::to_string(cfg.size / kMiB)},
            {"blocksize", std::to_string(cfg.block_size)},
            {"submit_queues", std::to_string(cfg.nr_queues)},
            {"hw_queue_depth", std::to_string(cfg.queue_depth)},
            {"max_sectors", std::to_string(max_io / 512)},
            {"power", "1"},
        };
        for (const auto& [key, value] : attrs) {
            if (Status st = write_attribute(dir_ + "/" + key, value); !st.ok()) {
                (void)destroy();
                return st;
            }
        }
        powered_ = true;
        info_.id = n;
        info_.path = "/dev/" + name_;
        info_.size = cfg.size;
        info_.block_size = cfg.block_size;
        info_.nr_queues = cfg.nr_queues;
        info_.queue_depth = cfg.queue_depth;
        info_.max_io_bytes = max_io;
        return wait_for_path(info_.path, 5000);
    }

    Status destroy() override {
        if (dir_.empty()) {
            return {};
        }
        Status st;
        if (powered_) {
            st = write_attribute(dir_ + "/power", "0");
            powered_ = false;
        }
        if (::rmdir(dir_.c_str()) != 0 && st.ok()) {
            st = Status::from_errno(errno, "null_blk: cannot remove " + dir_);
        }
        dir_.clear();
        return st;
    }

private:
    void describe_device(Capabilities& caps) const override {
        caps.set("module", "null_blk");
        caps.set("setup", "configfs: queue_mode=2 irqmode=0 memory_backed=0, max_sectors from "
                          "--max-io (default 512K, as userblk.ko)");
        caps.set("device", "/dev/nullb<N>");
        caps.set("data", "none: reads return whatever, writes are dropped");
    }

    std::string name_;
    std::string dir_;
    bool powered_ = false;
};

} // namespace

const TransportEntry transport_entry_null_blk{
    .name = "null_blk",
    .kind = TransportKind::reference,
    .summary = "reference: the kernel's null_blk, blk-mq with no user space (the per-I/O floor)",
    .make = &make_transport<NullBlk>,
    .backends = BackendUse::none,
};

} // namespace userblk
