#include "config.h"

#include <array>
#include <cstdio>

namespace userblk {

namespace {

struct FeatureName {
    std::uint64_t bit;
    std::string_view name;
};

constexpr std::array<FeatureName, 8> kFeatures = {{
    {USERBLK_F_FLUSH, "flush"},
    {USERBLK_F_DISCARD, "discard"},
    {USERBLK_F_WRITE_ZEROES, "write-zeroes"},
    {USERBLK_F_READ_ONLY, "read-only"},
    {USERBLK_F_FUA, "fua"},
    {USERBLK_F_ANY_DAEMON, "any-daemon"},
    {USERBLK_F_LEND, "lend"},
    {USERBLK_F_RECOVERY, "recovery"},
}};

static_assert((USERBLK_F_FLUSH | USERBLK_F_DISCARD | USERBLK_F_WRITE_ZEROES | USERBLK_F_READ_ONLY |
               USERBLK_F_FUA | USERBLK_F_ANY_DAEMON | USERBLK_F_LEND | USERBLK_F_RECOVERY) ==
                  USERBLK_F_ALL,
              "every uapi feature needs a name in kFeatures");

} // namespace

std::optional<std::uint64_t> parse_features(std::string_view list, std::string* bad) {
    std::uint64_t mask = 0;
    if (list.empty() || list == "none") {
        return mask;
    }
    while (true) {
        std::size_t comma = list.find(',');
        std::string_view word = list.substr(0, comma);
        bool found = false;
        for (const auto& f : kFeatures) {
            if (word == f.name) {
                mask |= f.bit;
                found = true;
            }
        }
        if (!found) {
            if (bad != nullptr) {
                *bad = std::string(word);
            }
            return std::nullopt;
        }
        if (comma == std::string_view::npos) {
            return mask;
        }
        list.remove_prefix(comma + 1);
    }
}

std::string_view socket_kind_name(SocketKind kind) noexcept {
    return kind == SocketKind::tcp_loopback ? "tcp" : "unix";
}

std::optional<SocketKind> parse_socket_kind(std::string_view name) noexcept {
    if (name == "unix") {
        return SocketKind::unix_stream;
    }
    if (name == "tcp") {
        return SocketKind::tcp_loopback;
    }
    return std::nullopt;
}

std::string_view feature_names() noexcept {
    return "flush, discard, write-zeroes, read-only, fua (with flush), any-daemon, lend (pipe, "
           "splice)";
}

std::string format_features(std::uint64_t features) {
    if (features == 0) {
        return "none";
    }
    std::string out;
    for (const auto& f : kFeatures) {
        if ((features & f.bit) != 0) {
            if (!out.empty()) {
                out += ',';
            }
            out += f.name;
            features &= ~f.bit;
        }
    }
    if (features != 0) {
        char hex[32];
        std::snprintf(hex, sizeof(hex), "%s0x%llx", out.empty() ? "" : ",",
                      static_cast<unsigned long long>(features));
        out += hex;
    }
    return out;
}

std::string state_name(std::uint32_t state) {
    switch (state) {
    case USERBLK_STATE_ADDED:
        return "added";
    case USERBLK_STATE_LIVE:
        return "live";
    case USERBLK_STATE_DEAD:
        return "dead";
    case USERBLK_STATE_RECOVERING:
        return "recovering";
    default:
        return "state" + std::to_string(state);
    }
}

std::string disk_path(std::uint32_t id) {
    return std::string("/dev/") + USERBLK_DISK_PREFIX + std::to_string(id);
}

} // namespace userblk
