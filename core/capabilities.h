// key=value self-description of a transport or backend (`userblk --dump-transport NAME`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace userblk {

/// An ordered list of key=value lines, as `nbdkit --dump-plugin` prints them.
/// Keys are lower_snake_case; values are single lines. Setting a key again replaces its value.
class Capabilities {
public:
    void set(std::string_view key, std::string_view value);
    void set_number(std::string_view key, std::uint64_t value);
    /// Flags print as 1 or 0.
    void set_flag(std::string_view key, bool value);

    [[nodiscard]] std::optional<std::string> get(std::string_view key) const;
    [[nodiscard]] const std::vector<std::pair<std::string, std::string>>& entries() const noexcept {
        return entries_;
    }
    /// One "key=value\n" line per entry, in insertion order.
    [[nodiscard]] std::string to_string() const;

private:
    std::vector<std::pair<std::string, std::string>> entries_;
};

} // namespace userblk
