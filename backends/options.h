// Backend options (`--backend NAME:KEY=VALUE,...`, BackendConfig::options): checked and read by
// each backend's factory.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/backend.h"

namespace userblk {

using BackendOptions = decltype(BackendConfig::options);

/// The keys, comma-separated without spaces ("path" or "host,port,export"); "" for none.
std::string option_keys(std::span<const std::string_view> keys);

/// Fails with EINVAL on a key of options that is not in keys, naming the keys backend takes:
/// "file: unknown option 'pth': Invalid argument (file takes: path)".
Status check_options(std::string_view backend, const BackendOptions& options,
                     std::span<const std::string_view> keys);

/// The value of key, or fallback when it is not given.
std::string option_string(const BackendOptions& options, std::string_view key,
                          std::string_view fallback);

/// The value of key as a decimal number from min to max, or fallback when it is not given.
Result<std::uint64_t> option_number(std::string_view backend, const BackendOptions& options,
                                    std::string_view key, std::uint64_t fallback, std::uint64_t min,
                                    std::uint64_t max);

} // namespace userblk
