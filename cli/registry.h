// The name-keyed tables of transports and backends (registry.cpp: the backends' written out, the
// transports' generated from the CMake lists).
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/backend.h"
#include "core/capabilities.h"
#include "core/transport.h"

namespace userblk {

/// One registered backend.
struct BackendEntry {
    std::string_view name;
    std::string_view summary;
    Result<std::unique_ptr<Backend>> (*make)(const BackendConfig& cfg);
    /// The keys of its options (`--backend NAME:KEY=VALUE,...`); empty when it takes none.
    std::span<const std::string_view> options;
    /// Its capability lines without an instance, for a backend that cannot be made without its
    /// options (a file, a server). Optional: nullptr asks an instance of size 0.
    void (*describe)(Capabilities& caps) = nullptr;
};

/// A parsed `--backend NAME[:KEY=VALUE[,KEY=VALUE...]]`.
struct BackendSpec {
    std::string name;
    decltype(BackendConfig::options) options;
};

/// Every transport, in table order: the userblk.ko transports, the baselines, the references.
std::span<const TransportEntry> transports() noexcept;
/// The transport called name, or nullptr.
const TransportEntry* find_transport(std::string_view name) noexcept;
/// The userblk transport whose userblk.ko mode is mode, or nullptr.
const TransportEntry* find_transport_by_mode(std::uint32_t mode) noexcept;

/// Every backend, in table order.
std::span<const BackendEntry> backends() noexcept;
/// The backend called name, or nullptr.
const BackendEntry* find_backend(std::string_view name) noexcept;

/// "copy" or "null, ram": the names, comma-separated, for error messages.
std::string transport_names();
std::string backend_names();

/// name=, kind=, summary=, for a userblk transport mode= (its name) and mode_number=, then the
/// transport's own lines.
Capabilities describe_transport(const TransportEntry& entry);

/// Whether the transport can busy-poll (its capability polling=1), so DeviceConfig::poll_us
/// means something to it.
bool transport_polls(const TransportEntry& entry);
/// Whether entry lends WRITE pages to pipes with --lend on (lend=1 in its capabilities).
bool transport_lends(const TransportEntry& entry);
/// The names of the transports that lend, comma-separated ("none" if none).
std::string lending_transport_names();
/// Whether a new daemon can take over entry's devices (recovery=1 in its capabilities).
bool transport_recovers(const TransportEntry& entry);
/// The names of the transports that recover, comma-separated ("none" if none).
std::string recovering_transport_names();
/// The transports that poll, comma-separated ("none" if there is none), for error messages.
std::string polling_transport_names();

/// name=, summary=, options= (its keys, comma-separated), then the backend's own lines (from
/// entry.describe, else from an instance of size 0).
Capabilities describe_backend(const BackendEntry& entry);

/// Parses NAME[:KEY=VALUE[,KEY=VALUE...]]: the name is up to the first ':'; keys are lower-case
/// letters, digits, '-' and '_', each given once; a value runs to the next ',' and may be empty
/// (export=). The name is not looked up. On error returns nullopt and sets *error to why, e.g.
/// "expected KEY=VALUE, got 'path'".
std::optional<BackendSpec> parse_backend_spec(std::string_view spec, std::string* error);

/// Checks options against the keys entry takes: EINVAL naming the unknown key and the keys it
/// takes. Its factory checks the same; this lets a caller reject a typo before doing anything.
Status check_backend_options(const BackendEntry& entry,
                             const decltype(BackendConfig::options)& options);

} // namespace userblk
