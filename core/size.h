// Byte sizes as users type them: 4096, 512K, 1G.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace userblk {

/// Parses a byte count: decimal digits with an optional K, M, G or T suffix (powers of 1024,
/// either case). Returns nullopt for anything else, including overflow past 2^64-1.
std::optional<std::uint64_t> parse_size(std::string_view text);

/// Formats bytes with the largest suffix that divides it exactly: 1073741824 -> "1G",
/// 1536 -> "1536", 0 -> "0".
std::string format_size(std::uint64_t bytes);

} // namespace userblk
