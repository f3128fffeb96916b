// Factories of the backends listed in the registry (transports/core/registry.cpp).
#pragma once

#include <memory>

#include "core/backend.h"

namespace userblk {

/// Reads return zeros, writes are dropped: the transport measured alone.
Result<std::unique_ptr<Backend>> make_null_backend(const BackendConfig& cfg);

/// A memory store of cfg.size bytes, reserved up front and backed lazily (zero pages until
/// written). No lock: see ram.cpp.
Result<std::unique_ptr<Backend>> make_ram_backend(const BackendConfig& cfg);

} // namespace userblk
