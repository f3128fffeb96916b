// The name-keyed tables of transports and backends (one explicit table each, in registry.cpp).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "backend.h"
#include "capabilities.h"
#include "transport.h"

namespace userblk {

/// One registered transport. The name is the one string used everywhere: TRANSPORT=, the kmod
/// mode, the folder and the results key.
struct TransportEntry {
    std::string_view name;
    std::string_view summary;             ///< one line for --dump-transport
    std::unique_ptr<Transport> (*make)(); ///< a fresh object, for one device
};

/// One registered backend.
struct BackendEntry {
    std::string_view name;
    std::string_view summary;
    Result<std::unique_ptr<Backend>> (*make)(const BackendConfig& cfg);
};

/// Every transport, in table order.
std::span<const TransportEntry> transports() noexcept;
/// The transport called name, or nullptr.
const TransportEntry* find_transport(std::string_view name) noexcept;

/// Every backend, in table order.
std::span<const BackendEntry> backends() noexcept;
/// The backend called name, or nullptr.
const BackendEntry* find_backend(std::string_view name) noexcept;

/// "copy" or "null, ram": the names, comma-separated, for error messages.
std::string transport_names();
std::string backend_names();

/// name=, summary=, then the transport's own lines.
Capabilities describe_transport(const TransportEntry& entry);

/// Whether the transport can busy-poll (its capability polling=1), so DeviceConfig::poll_us
/// means something to it.
bool transport_polls(const TransportEntry& entry);
/// The transports that poll, comma-separated ("none" if there is none), for error messages.
std::string polling_transport_names();

/// name=, summary=, then the backend's own lines (from an instance of size 0 where it needs one).
Capabilities describe_backend(const BackendEntry& entry);

} // namespace userblk
