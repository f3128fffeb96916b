// The null backend: reads return zeros, writes, discards and flushes are dropped.
//
// fill=none: a read leaves the I/O buffer as it is and returns whatever it holds (zeros, or an
// earlier request's data), as null_blk without memory_backed and ublksrv's null target do. It
// measures the transport without the backend's one store per byte read; under TCG that store
// is dear (glibc's memset of 4 KiB is a rep stosb, about 7.5 us: docs/platform.md).
#include <cerrno>
#include <cstring>
#include <string>

#include "backends.h"
#include "core/io.h"
#include "options.h"

namespace userblk {

namespace {

class NullBackend final : public Backend {
public:
    NullBackend(std::uint64_t size, bool fill) : size_(size), fill_(fill) {}

    [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }

    int read(BackendQueue& /*q*/, std::uint64_t off, std::span<std::byte> dst) noexcept override {
        if (!range_ok(off, dst.size(), size_)) {
            return -EINVAL;
        }
        if (fill_ && !dst.empty()) { // an empty span may have no data() to pass to memset
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
        caps.set("read", fill_ ? "zero-fill" : "untouched");
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
    bool fill_; ///< reads zero their buffer (fill=zero)
};

} // namespace

Result<std::unique_ptr<Backend>> make_null_backend(const BackendConfig& cfg) {
    if (Status st = check_options("null", cfg.options, kNullOptions); !st.ok()) {
        return st;
    }
    const std::string fill = option_string(cfg.options, "fill", "zero");
    if (fill != "zero" && fill != "none") {
        return Status::from_errno(EINVAL, "null: fill=" + fill + " is not a fill",
                                  "fill=zero (reads return zeros, the default) or fill=none "
                                  "(reads leave the buffer as it is)");
    }
    return std::unique_ptr<Backend>(std::make_unique<NullBackend>(cfg.size, fill == "zero"));
}

} // namespace userblk
