// What the kernel-in-the-loop programs that speak the raw uapi share (badinput_test.cpp,
// lifetime_test.cpp, stall_daemon.cpp): fds, ioctls, a good configuration, direct I/O on
// another thread, the ring area mapped as the uapi says. Nothing of the project's C++ library,
// so that these programs test the kernel and nothing else.
#pragma once

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <uapi/userblk.h>

#include "registry_mode.h"

namespace userblk_test {


inline std::string g_transport = "copy";
// An address no process maps, hidden from the compiler's buffer checks.
inline void* volatile g_bad_ptr = reinterpret_cast<void*>(16);


class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept {
        reset(o.release());
        return *this;
    }
    ~Fd() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1) {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_;
};

// ioctl returning -errno on failure, the result otherwise.
template <typename Arg>
inline int xioctl(int fd, unsigned long cmd, Arg arg) {
    int r = ::ioctl(fd, cmd, arg);
    return r < 0 ? -errno : r;
}

inline userblk_dev_config good_config(uint32_t mode) {
    userblk_dev_config c{};
    c.abi_version = USERBLK_ABI_VERSION;
    c.dev_id = USERBLK_DEV_ID_ANY;
    c.mode = mode;
    c.logical_block_size = 512;
    c.size = 64ull << 20;
    c.nr_queues = 1;
    c.queue_depth = 4;
    c.max_io_bytes = 64 * 1024;
    c.timeout_ms = 20000;
    return c;
}



// Direct I/O (4 KiB unless said) on a device, run on another thread while the test serves it.
inline constexpr size_t kIoBlock = 4096;

inline std::future<ssize_t> io_async(const std::string& path, bool write, off_t off, void* buf,
                                     size_t len = kIoBlock) {
    return std::async(std::launch::async, [path, write, off, buf, len] {
        int fd = ::open(path.c_str(), (write ? O_WRONLY : O_RDONLY) | O_DIRECT | O_CLOEXEC);
        if (fd < 0)
            return (ssize_t)-errno;
        ssize_t r = write ? ::pwrite(fd, buf, len, off) : ::pread(fd, buf, len, off);
        if (r < 0)
            r = -errno;
        ::close(fd);
        return r;
    });
}

// Waits up to 2 s for a device node.
inline bool wait_for_path(const std::string& path) {
    for (int i = 0; i < 200 && ::access(path.c_str(), F_OK) != 0; i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return ::access(path.c_str(), F_OK) == 0;
}

struct AlignedBlock {
    AlignedBlock() { data = static_cast<char*>(std::aligned_alloc(4096, 4096)); }
    ~AlignedBlock() { std::free(data); }
    char* data;
};

// The area as the uapi says to map it: [0, rw_off) read-only, the rest read-write, side by
// side so that every offset is from one base. nullptr (errno set) if a part fails.
inline char* map_ring_area(int fd, const userblk_ring_layout& l) {
    void* base = ::mmap(nullptr, l.map_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return nullptr;
    char* b = static_cast<char*>(base);
    if (::mmap(b, l.rw_off, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
        ::mmap(b + l.rw_off, l.map_size - l.rw_off, PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_FIXED, fd, (off_t)l.rw_off) == MAP_FAILED) {
        int err = errno;
        ::munmap(base, l.map_size);
        errno = err;
        return nullptr;
    }
    return b;
}

} // namespace userblk_test
