// Factories of the backends listed in the registry (cli/registry.cpp), and the
// option keys each takes (`--backend NAME:KEY=VALUE,...`; a factory rejects any other key).
#pragma once

#include <array>
#include <memory>
#include <string_view>

#include "core/backend.h"
#include "core/capabilities.h"

namespace userblk {

/// Writes are dropped, reads return zeros: the transport measured alone. Option: fill=zero
/// (the default) or fill=none, reads that leave the I/O buffer as it is, as null_blk does.
Result<std::unique_ptr<Backend>> make_null_backend(const BackendConfig& cfg);
inline constexpr std::array<std::string_view, 1> kNullOptions{"fill"};

/// A memory store of cfg.size bytes, reserved up front and backed lazily (zero pages until
/// written). No lock: see ram.cpp. No options.
Result<std::unique_ptr<Backend>> make_ram_backend(const BackendConfig& cfg);
inline constexpr std::array<std::string_view, 0> kRamOptions{};

/// A regular file, created if missing and extended (sparse) to cfg.size; its pipe path splices
/// to and from the file. Options: path=FILE (required), direct=0|1 (O_DIRECT). See file.cpp.
Result<std::unique_ptr<Backend>> make_file_backend(const BackendConfig& cfg);
inline constexpr std::array<std::string_view, 2> kFileOptions{"path", "direct"};
/// The file backend's capability lines (it cannot be made without a path).
void describe_file_backend(Capabilities& caps);

/// A remote NBD server over TCP, one connection per queue; its pipe path splices to and from
/// the socket. Options: host= (127.0.0.1), port= (10809), export= (""), timeout-ms= (30000).
/// See forward.cpp.
Result<std::unique_ptr<Backend>> make_forward_backend(const BackendConfig& cfg);
inline constexpr std::array<std::string_view, 4> kForwardOptions{"host", "port", "export",
                                                                 "timeout-ms"};
/// The forward backend's capability lines (it cannot be made without a server).
void describe_forward_backend(Capabilities& caps);

} // namespace userblk
