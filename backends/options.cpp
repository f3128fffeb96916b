#include "options.h"

#include <algorithm>
#include <charconv>

namespace userblk {

std::string option_keys(std::span<const std::string_view> keys) {
    std::string out;
    for (std::string_view k : keys) {
        if (!out.empty()) {
            out += ',';
        }
        out += k;
    }
    return out;
}

Status check_options(std::string_view backend, const BackendOptions& options,
                     std::span<const std::string_view> keys) {
    for (const auto& [key, value] : options) {
        if (std::find(keys.begin(), keys.end(), key) != keys.end()) {
            continue;
        }
        std::string takes = std::string(backend);
        if (keys.empty()) {
            takes += " takes no options";
        } else {
            takes += " takes: ";
            for (std::size_t i = 0; i < keys.size(); ++i) {
                takes += (i == 0 ? "" : ", ") + std::string(keys[i]);
            }
        }
        return Status::from_errno(EINVAL, std::string(backend) + ": unknown option '" + key + "'",
                                  takes);
    }
    return {};
}

std::string option_string(const BackendOptions& options, std::string_view key,
                          std::string_view fallback) {
    auto it = options.find(key);
    return it != options.end() ? it->second : std::string(fallback);
}

Result<std::uint64_t> option_number(std::string_view backend, const BackendOptions& options,
                                    std::string_view key, std::uint64_t fallback, std::uint64_t min,
                                    std::uint64_t max) {
    auto it = options.find(key);
    if (it == options.end()) {
        return fallback;
    }
    const std::string& text = it->second;
    std::uint64_t v = 0;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec != std::errc() || ptr != end || v < min || v > max) {
        return Status::from_errno(
            EINVAL, std::string(backend) + ": invalid " + std::string(key) + "='" + text + "'",
            "expected a whole number from " + std::to_string(min) + " to " + std::to_string(max));
    }
    return v;
}

} // namespace userblk
