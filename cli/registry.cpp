// The registries: every transport and backend, by name. The transports' table is generated
// (registry_entries.inc, from USERBLK_KMOD_TRANSPORTS, USERBLK_BASELINES and USERBLK_REFERENCES in
// CMake): each transport defines its own entry, in its own folder, and is listed nowhere else.
// Adding a backend: its file in backends/, one line in kBackends, and the file in the backends'
// source list.
#include "registry.h"

#include <array>

#include "backends/backends.h"
#include "backends/options.h"

namespace userblk {

// Declares every transport_entry_<name> and defines USERBLK_TRANSPORT_ENTRIES, their list.
#include "registry_entries.inc"

namespace {

// Copies of the entries, made when the program starts (each entry is constant-initialized in
// its own folder, so it is whole by then).
const std::array kTransports = {USERBLK_TRANSPORT_ENTRIES};

// clang-format off
const std::array kBackends = {
    BackendEntry{"null", "reads return zeros (fill=none: the buffer as it is), writes are dropped: measures the transport alone", &make_null_backend, kNullOptions},
    BackendEntry{"ram",  "memory store, allocated up front and backed lazily", &make_ram_backend, kRamOptions},
    BackendEntry{"file", "a regular file (file:path=FILE); splices between pipe and file", &make_file_backend, kFileOptions, &describe_file_backend},
    BackendEntry{"forward", "a remote NBD server over TCP (forward:host=H,port=P,export=E); splices between pipe and socket", &make_forward_backend, kForwardOptions, &describe_forward_backend},
};
// clang-format on

template <class Entry, std::size_t N>
const Entry* find(const std::array<Entry, N>& table, std::string_view name) noexcept {
    for (const auto& e : table) {
        if (e.name == name) {
            return &e;
        }
    }
    return nullptr;
}

template <class Entry, std::size_t N>
std::string names(const std::array<Entry, N>& table) {
    std::string out;
    for (const auto& e : table) {
        if (!out.empty()) {
            out += ", ";
        }
        out += e.name;
    }
    return out;
}

} // namespace

std::span<const TransportEntry> transports() noexcept {
    return kTransports;
}

const TransportEntry* find_transport(std::string_view name) noexcept {
    return find(kTransports, name);
}

std::span<const BackendEntry> backends() noexcept {
    return kBackends;
}

const BackendEntry* find_backend(std::string_view name) noexcept {
    return find(kBackends, name);
}

std::string transport_names() {
    return names(kTransports);
}

std::string backend_names() {
    return names(kBackends);
}

const TransportEntry* find_transport_by_mode(std::uint32_t mode) noexcept {
    for (const auto& e : kTransports) {
        if (e.kind == TransportKind::userblk && e.mode == mode) {
            return &e;
        }
    }
    return nullptr;
}

Capabilities describe_transport(const TransportEntry& entry) {
    Capabilities caps;
    caps.set("name", entry.name);
    caps.set("kind", kind_name(entry.kind));
    caps.set("summary", entry.summary);
    if (entry.kind == TransportKind::userblk) {
        caps.set("mode", entry.name);
        caps.set_number("mode_number", entry.mode);
    }
    caps.set("backend_use", backend_use_name(entry.backends));
    if (entry.backends == BackendUse::own) {
        std::string names;
        for (std::string_view n : entry.own_backends) {
            names += (names.empty() ? "" : ",") + std::string(n);
        }
        caps.set("backends", names);
    }
    entry.make()->describe(caps);
    return caps;
}

bool transport_polls(const TransportEntry& entry) {
    return describe_transport(entry).get("polling") == "1";
}

bool transport_lends(const TransportEntry& entry) {
    return describe_transport(entry).get("lend") == "1";
}

bool transport_recovers(const TransportEntry& entry) {
    return describe_transport(entry).get("recovery") == "1";
}

namespace {

/// The names of the transports for which has(entry) holds, comma-separated ("none" if none).
std::string transport_names_where(bool (*has)(const TransportEntry&)) {
    std::string out;
    for (const auto& t : kTransports) {
        if (has(t)) {
            out += (out.empty() ? "" : ", ") + std::string(t.name);
        }
    }
    return out.empty() ? "none" : out;
}

} // namespace

std::string lending_transport_names() {
    return transport_names_where(&transport_lends);
}

std::string recovering_transport_names() {
    return transport_names_where(&transport_recovers);
}

std::string polling_transport_names() {
    return transport_names_where(&transport_polls);
}

Capabilities describe_backend(const BackendEntry& entry) {
    Capabilities caps;
    caps.set("name", entry.name);
    caps.set("summary", entry.summary);
    caps.set("options", option_keys(entry.options));
    if (entry.describe != nullptr) {
        entry.describe(caps); // says native_pipe itself
        return caps;
    }
    auto backend = entry.make(BackendConfig{});
    if (backend.ok()) {
        caps.set_flag("native_pipe", backend.value()->native_pipe());
        backend.value()->describe(caps);
    }
    return caps;
}

std::optional<BackendSpec> parse_backend_spec(std::string_view spec, std::string* error) {
    auto fail = [&](std::string why) -> std::optional<BackendSpec> {
        if (error != nullptr) {
            *error = std::move(why);
        }
        return std::nullopt;
    };
    BackendSpec out;
    std::size_t colon = spec.find(':');
    out.name = std::string(spec.substr(0, colon));
    if (out.name.empty()) {
        return fail("expected NAME[:KEY=VALUE,...], got no name");
    }
    if (colon == std::string_view::npos) {
        return out;
    }
    std::string_view rest = spec.substr(colon + 1);
    if (rest.empty()) {
        return fail("expected KEY=VALUE after '" + out.name + ":'");
    }
    while (true) {
        std::size_t comma = rest.find(',');
        std::string_view item = rest.substr(0, comma);
        std::size_t eq = item.find('=');
        if (eq == std::string_view::npos || eq == 0) {
            return fail("expected KEY=VALUE, got '" + std::string(item) + "'");
        }
        std::string_view key = item.substr(0, eq);
        if (key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") !=
            std::string_view::npos) {
            return fail("invalid key '" + std::string(key) +
                        "' (lower-case letters, digits, '-' and '_')");
        }
        if (!out.options.emplace(key, item.substr(eq + 1)).second) {
            return fail("'" + std::string(key) + "' is given twice");
        }
        if (comma == std::string_view::npos) {
            return out;
        }
        rest = rest.substr(comma + 1);
    }
}

Status check_backend_options(const BackendEntry& entry,
                             const decltype(BackendConfig::options)& options) {
    return check_options(entry.name, options, entry.options);
}

} // namespace userblk
