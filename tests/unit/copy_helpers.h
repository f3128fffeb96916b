// Building request batches and decoding completion batches of the copy transport, as the
// kernel would, for the tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <vector>

#include <uapi/userblk.h>

#include "transports/desc/codec.h"

namespace userblk::test {

/// A read() batch as userblk.ko would return it.
struct BatchBuilder {
    std::vector<std::byte> bytes;

    BatchBuilder& add(std::uint16_t tag, std::uint8_t op, std::uint64_t off, std::uint32_t len,
                      std::span<const std::byte> data = {}, std::uint32_t gen = 1) {
        userblk_io_desc d{};
        d.tag = tag;
        d.op = op;
        d.gen = gen;
        d.offset = off;
        d.len = len;
        append(&d, sizeof(d));
        append(data.data(), data.size());
        return *this;
    }
    BatchBuilder& garbage(std::size_t n) {
        bytes.resize(bytes.size() + n, std::byte{0x5a});
        return *this;
    }
    std::span<std::byte> span() { return bytes; }

private:
    void append(const void* p, std::size_t n) {
        const auto* b = static_cast<const std::byte*>(p);
        bytes.insert(bytes.end(), b, b + n);
    }
};

/// One decoded completion.
struct Completion {
    userblk_io_cpl cpl{};
    std::vector<std::byte> data;
};

/// Decodes a write() batch; read_len maps the tags of READ requests to their length (a
/// successful READ completion carries that many bytes). Stops at anything malformed.
inline std::vector<Completion> decode(std::span<const std::byte> bytes,
                                      const std::map<std::uint16_t, std::uint32_t>& read_len) {
    std::vector<Completion> out;
    std::size_t pos = 0;
    while (pos + sizeof(userblk_io_cpl) <= bytes.size()) {
        Completion c;
        std::memcpy(&c.cpl, bytes.data() + pos, sizeof(c.cpl));
        pos += sizeof(c.cpl);
        auto it = read_len.find(c.cpl.tag);
        if (c.cpl.result == 0 && it != read_len.end()) {
            if (pos + it->second > bytes.size()) {
                break;
            }
            c.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(pos),
                          bytes.begin() + static_cast<std::ptrdiff_t>(pos + it->second));
            pos += it->second;
        }
        out.push_back(std::move(c));
    }
    return out;
}

} // namespace userblk::test
