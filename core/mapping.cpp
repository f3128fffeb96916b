#include "mapping.h"

#include <cerrno>
#include <string>
#include <utility>

#include <sys/mman.h>

namespace userblk {

namespace {

Result<Mapping> map_failed(std::string_view what, std::size_t len, int err) {
    std::string msg(what);
    msg += ": mmap of " + std::to_string(len) + " bytes failed";
    return Status::from_errno(err, msg);
}

} // namespace

Result<Mapping> Mapping::anonymous(std::size_t len, bool noreserve, std::string_view what) {
    if (len == 0) {
        return Mapping();
    }
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | (noreserve ? MAP_NORESERVE : 0);
    void* addr = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (addr == MAP_FAILED) {
        return map_failed(what, len, errno);
    }
    return Mapping(addr, len);
}

Result<Mapping> Mapping::shared(int fd, std::size_t len, off_t offset, int prot,
                                std::string_view what) {
    if (len == 0) {
        return Status::from_errno(EINVAL, std::string(what) + ": mmap failed", "zero length");
    }
    void* addr = ::mmap(nullptr, len, prot, MAP_SHARED, fd, offset);
    if (addr == MAP_FAILED) {
        return map_failed(what, len, errno);
    }
    return Mapping(addr, len);
}

Result<Mapping> Mapping::shared_split(int fd, std::size_t ro_len, std::size_t len,
                                      std::string_view what) {
    if (ro_len == 0 || ro_len >= len) {
        return Status::from_errno(EINVAL, std::string(what) + ": mmap failed",
                                  "the read-only part is empty or the whole area");
    }
    // Reserve the whole range first, so the two parts land side by side; then map over it.
    void* base = ::mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        return map_failed(what, len, errno);
    }
    Mapping whole(base, len); // unmaps both parts, or what is left of the reservation
    auto* rw = static_cast<std::byte*>(base) + ro_len;
    if (::mmap(base, ro_len, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
        return map_failed(std::string(what) + " (read-only part)", ro_len, errno);
    }
    if (::mmap(rw, len - ro_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
               static_cast<off_t>(ro_len)) == MAP_FAILED) {
        return map_failed(std::string(what) + " (writable part)", len - ro_len, errno);
    }
    return whole;
}

Mapping::Mapping(Mapping&& other) noexcept
    : addr_(std::exchange(other.addr_, nullptr)), len_(std::exchange(other.len_, 0)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
    if (this != &other) {
        reset();
        addr_ = std::exchange(other.addr_, nullptr);
        len_ = std::exchange(other.len_, 0);
    }
    return *this;
}

Mapping::~Mapping() {
    reset();
}

void Mapping::reset() noexcept {
    if (addr_ != nullptr) {
        ::munmap(addr_, len_);
        addr_ = nullptr;
        len_ = 0;
    }
}

} // namespace userblk
