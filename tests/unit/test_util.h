// Helpers shared by the unit tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "core/backend.h"
#include "cli/registry.h"

namespace userblk::test {

/// A backend from the registry with one queue context, ready for I/O.
struct BackendWithQueue {
    QueueStats stats;
    std::unique_ptr<Backend> backend;
    std::optional<BackendQueue> queue;

    BackendWithQueue(std::string_view name, std::uint64_t size, std::uint32_t max_io = 64 * 1024,
                     decltype(BackendConfig::options) options = {}) {
        const BackendEntry* entry = find_backend(name);
        if (entry == nullptr) {
            ADD_FAILURE() << "no backend " << name;
            return;
        }
        auto b = entry->make(BackendConfig{size, 512, 1, max_io, std::move(options)});
        if (!b.ok()) {
            ADD_FAILURE() << b.status().message();
            return;
        }
        backend = std::move(b).value();
        auto q = BackendQueue::open(*backend, 0, max_io, stats);
        if (!q.ok()) {
            ADD_FAILURE() << q.status().message();
            return;
        }
        queue.emplace(std::move(q).value());
    }
};

/// n bytes of a pattern that differs per seed and position (never all zero).
inline std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i) {
        v[i] = static_cast<std::byte>((i * 131 + seed * 7 + 1) % 251 + 1);
    }
    return v;
}

inline bool all_zero(std::span<const std::byte> s) {
    for (std::byte b : s) {
        if (b != std::byte{0}) {
            return false;
        }
    }
    return true;
}

} // namespace userblk::test
