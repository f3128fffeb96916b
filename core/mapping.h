// RAII for memory mappings.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include <sys/types.h>

#include "status.h"

namespace userblk {

/// Owns one mmap()ed region and unmaps it exactly once. Page aligned.
class Mapping {
public:
    Mapping() noexcept = default;

    /// len bytes of private, zero-filled anonymous memory. With noreserve, no swap is reserved
    /// and pages are only allocated when first written (MAP_NORESERVE). len 0 gives an empty
    /// mapping. what names the object in the error message.
    static Result<Mapping> anonymous(std::size_t len, bool noreserve, std::string_view what);

    /// A shared mapping of len bytes of fd at offset, with prot PROT_* (e.g. a queue's rings).
    static Result<Mapping> shared(int fd, std::size_t len, off_t offset, int prot,
                                  std::string_view what);

    /// A shared mapping of the first len bytes of fd in two parts side by side: [0, ro_len)
    /// read-only and [ro_len, len) read-write (a ring queue's area, which the kernel lets the
    /// daemon write only where the daemon must). ro_len is a multiple of the page size.
    static Result<Mapping> shared_split(int fd, std::size_t ro_len, std::size_t len,
                                        std::string_view what);

    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    Mapping(Mapping&& other) noexcept;
    Mapping& operator=(Mapping&& other) noexcept;
    ~Mapping();

    [[nodiscard]] std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
    [[nodiscard]] std::size_t size() const noexcept { return len_; }
    [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {data(), len_}; }

private:
    Mapping(void* addr, std::size_t len) noexcept : addr_(addr), len_(len) {}
    void reset() noexcept;

    void* addr_ = nullptr;
    std::size_t len_ = 0;
};

} // namespace userblk
