#include "size.h"

#include <array>
#include <limits>

namespace userblk {

namespace {

constexpr std::array<char, 4> kSuffixes = {'K', 'M', 'G', 'T'};

} // namespace

std::optional<std::uint64_t> parse_size(std::string_view text) {
    unsigned shift = 0;
    if (!text.empty()) {
        char last = text.back();
        if (last >= 'a' && last <= 'z') {
            last = static_cast<char>(last - 'a' + 'A');
        }
        for (std::size_t i = 0; i < kSuffixes.size(); ++i) {
            if (last == kSuffixes[i]) {
                shift = 10U * static_cast<unsigned>(i + 1);
                text.remove_suffix(1);
                break;
            }
        }
    }
    if (text.empty()) {
        return std::nullopt;
    }
    std::uint64_t value = 0;
    constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
    for (char c : text) {
        if (c < '0' || c > '9') {
            return std::nullopt;
        }
        auto digit = static_cast<std::uint64_t>(c - '0');
        if (value > (kMax - digit) / 10) {
            return std::nullopt;
        }
        value = value * 10 + digit;
    }
    if (shift != 0 && value > (kMax >> shift)) {
        return std::nullopt;
    }
    return value << shift;
}

std::string format_size(std::uint64_t bytes) {
    if (bytes == 0) {
        return "0";
    }
    for (std::size_t i = kSuffixes.size(); i > 0; --i) {
        unsigned shift = 10U * static_cast<unsigned>(i);
        std::uint64_t unit = std::uint64_t{1} << shift;
        if (bytes % unit == 0) {
            return std::to_string(bytes >> shift) + kSuffixes[i - 1];
        }
    }
    return std::to_string(bytes);
}

} // namespace userblk
