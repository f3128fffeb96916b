#include "capabilities.h"

#include <algorithm>

namespace userblk {

void Capabilities::set(std::string_view key, std::string_view value) {
    std::string line(value);
    std::replace(line.begin(), line.end(), '\n', ' '); // one line per key, whatever the value
    for (auto& [k, v] : entries_) {
        if (k == key) {
            v = std::move(line);
            return;
        }
    }
    entries_.emplace_back(std::string(key), std::move(line));
}

void Capabilities::set_number(std::string_view key, std::uint64_t value) {
    set(key, std::to_string(value));
}

void Capabilities::set_flag(std::string_view key, bool value) {
    set(key, value ? "1" : "0");
}

std::optional<std::string> Capabilities::get(std::string_view key) const {
    for (const auto& [k, v] : entries_) {
        if (k == key) {
            return v;
        }
    }
    return std::nullopt;
}

std::string Capabilities::to_string() const {
    std::string out;
    for (const auto& [k, v] : entries_) {
        out += k;
        out += '=';
        out += v;
        out += '\n';
    }
    return out;
}

} // namespace userblk
