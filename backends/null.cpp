// The null backend: reads return zeros, writes, discards and flushes are dropped.
#include <cerrno>
#include <cstring>

#include "backends.h"
#include "core/io.h"
#include "options.h"

namespace userblk {

namespace {

class NullBackend final : public Backend {
public:
    explicit NullBackend(std::uint64_t size) : size_(size) {}

    [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }

    int read(BackendQueue& /*q*/, std::uint64_t off, std::span<std::byte> dst) noexcept override {
        if (!range_ok(off, dst.size(), size_)) {
            return -EINVAL;
        }
        if (!dst.empty()) { // an empty span may have no data() to pass to memset
            std::memset(dst.data(), 0, dst.size());
        }
        return 0;
    }

    int write(BackendQueue& /*q*/, std::uint64_t off, std::span<const std::byte> src,
              std::uint32_t /*flags*/) noexcept override {
        return range_ok(off, src.size(), size_) ? 0 : -EINVAL;
    }

    int discard(BackendQueue& /*q*/, std::uint64_t off, std::uint64_t len) noexcept override {
        return range_ok(off, len, size_) ? 0 : -EINVAL;
    }

    int write_zeroes(BackendQueue& /*q*/, std::uint64_t off, std::uint64_t len,
                     std::uint32_t /*flags*/ = 0) noexcept override {
        return range_ok(off, len, size_) ? 0 : -EINVAL;
    }

    [[nodiscard]] BackendServes serves() const noexcept override {
        return {.write = true, .cache = false, .discard = true, .write_zeroes = true};
    }

    void describe(Capabilities& caps) const override {
        caps.set("storage", "none");
        caps.set("read", "zero-fill");
        caps.set("write", "dropped");
        caps.set_flag("flush", true);
        caps.set_flag("discard", true);
        caps.set_flag("write_zeroes", true);
        caps.set("pipe_path", "adapter");
        caps.set("locking", "none");
        caps.set_flag("multi_conn", true); // nothing cached per queue: nbd may offer multi-conn
    }

private:
    std::uint64_t size_;
};

} // namespace

Result<std::unique_ptr<Backend>> make_null_backend(const BackendConfig& cfg) {
    if (Status st = check_options("null", cfg.options, kNullOptions); !st.ok()) {
        return st;
    }
    return std::unique_ptr<Backend>(std::make_unique<NullBackend>(cfg.size));
}

} // namespace userblk
