// The registries. Adding a transport: its folder, one line in kTransports, and its name in
// USERBLK_TRANSPORTS (transports/CMakeLists.txt). Adding a backend: its file in backends/, one
// line in kBackends, and the file in the backends' source list.
#include "registry.h"

#include <array>

#include "backends/backends.h"
#include "copy/copy.h"
#include "reference/reference.h"
#include "ring/ring.h"

namespace userblk {

namespace {

// clang-format off
const std::array kTransports = {
    TransportEntry{"copy", "read()/write() on the queue fd; data copied by the kernel in the same syscalls", &make_copy_transport},
    TransportEntry{"ring", "shared submission/completion rings and per-tag buffers mmap()ed from the queue fd; one RING_ENTER per batch; optional busy-poll", &make_ring_transport},
    TransportEntry{"null_blk", "reference: the kernel's null_blk, blk-mq with no user space (the per-I/O floor)", &make_null_blk_transport},
    TransportEntry{"brd", "reference: the kernel's RAM disk (the memory ceiling)", &make_brd_transport},
};

const std::array kBackends = {
    BackendEntry{"null", "reads return zeros, writes are dropped: measures the transport alone", &make_null_backend},
    BackendEntry{"ram",  "memory store, allocated up front and backed lazily", &make_ram_backend},
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

Capabilities describe_transport(const TransportEntry& entry) {
    Capabilities caps;
    caps.set("name", entry.name);
    caps.set("summary", entry.summary);
    entry.make()->describe(caps);
    return caps;
}

bool transport_polls(const TransportEntry& entry) {
    return describe_transport(entry).get("polling") == "1";
}

std::string polling_transport_names() {
    std::string out;
    for (const auto& t : kTransports) {
        if (transport_polls(t)) {
            out += (out.empty() ? "" : ", ") + std::string(t.name);
        }
    }
    return out.empty() ? "none" : out;
}

Capabilities describe_backend(const BackendEntry& entry) {
    Capabilities caps;
    caps.set("name", entry.name);
    caps.set("summary", entry.summary);
    auto backend = entry.make(BackendConfig{});
    if (backend.ok()) {
        backend.value()->describe(caps);
    }
    return caps;
}

} // namespace userblk
