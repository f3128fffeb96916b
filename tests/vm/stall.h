// Ways for a fake daemon to stall the kernel on purpose, for the tests of what userblk.ko does
// with a request that a system call holds while the daemon does not move (lifetime_test.cpp,
// stall_daemon.cpp):
//   - StallingMemory: a buffer backed by a userfaultfd, so that the first touch of each of its
//     pages (by the kernel copying a request's data into it, say) waits until release();
//   - PipeHolder: a thread that holds a pipe's mutex for as long as the test likes, by splicing
//     the pipe into a socket whose peer does not read (what a daemon forwarding to a stalled
//     server does).
#pragma once

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

namespace userblk_test {

/// len bytes of anonymous memory registered with a userfaultfd (missing pages): the first
/// touch of a page, from user space or by the kernel's copy_to_user, waits until release(),
/// which fills the waiting pages with zeros and unregisters the range. ok() is false (and
/// error() says why) where userfaultfd cannot be had.
class StallingMemory {
public:
    explicit StallingMemory(size_t len) : len_(len) {
        uffd_ = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
        if (uffd_ < 0) {
            error_ = std::string("userfaultfd: ") + std::strerror(errno) +
                     " (a kernel with CONFIG_USERFAULTFD, as root)";
            return;
        }
        uffdio_api api{};
        api.api = UFFD_API;
        if (::ioctl(uffd_, UFFDIO_API, &api) != 0) {
            error_ = std::string("UFFDIO_API: ") + std::strerror(errno);
            return;
        }
        void* p = ::mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            error_ = std::string("mmap: ") + std::strerror(errno);
            return;
        }
        data_ = static_cast<char*>(p);
        uffdio_register reg{};
        reg.range.start = reinterpret_cast<unsigned long>(data_);
        reg.range.len = len_;
        reg.mode = UFFDIO_REGISTER_MODE_MISSING;
        if (::ioctl(uffd_, UFFDIO_REGISTER, &reg) != 0) {
            error_ = std::string("UFFDIO_REGISTER: ") + std::strerror(errno);
            return;
        }
        handler_ = std::thread([this] { handle(); });
    }
    StallingMemory(const StallingMemory&) = delete;
    StallingMemory& operator=(const StallingMemory&) = delete;
    ~StallingMemory() {
        release();
        if (handler_.joinable())
            handler_.join();
        if (data_ != nullptr)
            ::munmap(data_, len_);
        if (uffd_ >= 0)
            ::close(uffd_);
    }

    [[nodiscard]] bool ok() const { return error_.empty(); }
    [[nodiscard]] const std::string& error() const { return error_; }
    [[nodiscard]] char* data() const { return data_; }
    [[nodiscard]] size_t size() const { return len_; }

    /// Waits until something touched a page and now waits; false after timeout.
    bool wait_for_stall(std::chrono::milliseconds timeout) {
        std::unique_lock lock(m_);
        return cv_.wait_for(lock, timeout, [this] { return faults_ > 0; });
    }
    [[nodiscard]] unsigned faults() {
        std::lock_guard lock(m_);
        return faults_;
    }

    /// Lets every waiting and later touch go on. Idempotent.
    void release() {
        {
            std::lock_guard lock(m_);
            released_ = true;
        }
        cv_.notify_all();
    }

private:
    void handle() {
        const long page = ::sysconf(_SC_PAGESIZE);
        std::vector<unsigned long> waiting;
        for (;;) {
            {
                std::lock_guard lock(m_);
                if (released_) {
                    break;
                }
            }
            pollfd p{uffd_, POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0)
                continue;
            uffd_msg msg{};
            if (::read(uffd_, &msg, sizeof(msg)) != static_cast<ssize_t>(sizeof(msg)))
                continue;
            if (msg.event != UFFD_EVENT_PAGEFAULT)
                continue;
            waiting.push_back(msg.arg.pagefault.address & ~static_cast<unsigned long>(page - 1));
            {
                std::lock_guard lock(m_);
                ++faults_;
            }
            cv_.notify_all();
        }
        // Released: no later touch waits, and the waiting ones get zero pages.
        uffdio_range range{reinterpret_cast<unsigned long>(data_), len_};
        ::ioctl(uffd_, UFFDIO_UNREGISTER, &range);
        for (unsigned long addr : waiting) {
            uffdio_zeropage z{};
            z.range.start = addr;
            z.range.len = static_cast<unsigned long>(page);
            ::ioctl(uffd_, UFFDIO_ZEROPAGE, &z);
        }
        // A fault that raced with the unregister is woken by it; wake the rest to be sure.
        ::ioctl(uffd_, UFFDIO_WAKE, &range);
    }

    size_t len_;
    int uffd_ = -1;
    char* data_ = nullptr;
    std::string error_;
    std::thread handler_;
    std::mutex m_;
    std::condition_variable cv_;
    unsigned faults_ = 0;
    bool released_ = false;
};

/// Holds the mutex of the pipe whose read end is pipe_rd: puts a byte into the pipe through
/// pipe_wr, fills the receive queue of a SOCK_SEQPACKET socket's peer, then splices the pipe
/// into the socket (which sends a pipe page with a blocking sendmsg), so that the splice waits
/// in the kernel with the pipe locked until release() drains the peer. ok() is false (and
/// error() says why) when it could not get there.
class PipeHolder {
public:
    PipeHolder(int pipe_rd, int pipe_wr) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
            error_ = std::string("socketpair: ") + std::strerror(errno);
            return;
        }
        tx_ = sv[0];
        rx_ = sv[1];
        int fl = ::fcntl(tx_, F_GETFL);
        ::fcntl(tx_, F_SETFL, fl | O_NONBLOCK);
        char junk[4096] = {};
        while (::send(tx_, junk, sizeof(junk), MSG_DONTWAIT) > 0) {
        }
        ::fcntl(tx_, F_SETFL, fl & ~O_NONBLOCK); // the splice below must block
        char one = 'h';
        if (::write(pipe_wr, &one, 1) != 1) {
            error_ = std::string("a byte into the pipe: ") + std::strerror(errno);
            return;
        }
        thread_ = std::thread([this, pipe_rd] {
            entered_.store(true);
            ::splice(pipe_rd, nullptr, tx_, nullptr, 1, 0); // blocks, holding the pipe
            done_.store(true);
        });
        // The splice blocks in the socket's send with the pipe locked: give it a moment to get
        // there, and check that it did not return instead.
        for (int i = 0; i < 50 && !entered_.load(); i++)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        if (done_.load())
            error_ = "the splice into a full socket returned instead of blocking";
    }
    PipeHolder(const PipeHolder&) = delete;
    PipeHolder& operator=(const PipeHolder&) = delete;
    ~PipeHolder() {
        release();
        if (thread_.joinable())
            thread_.join();
        if (tx_ >= 0)
            ::close(tx_);
        if (rx_ >= 0)
            ::close(rx_);
    }

    [[nodiscard]] bool ok() const { return error_.empty(); }
    [[nodiscard]] const std::string& error() const { return error_; }

    /// Drains the socket until the splice returns: the pipe is free again. Idempotent.
    void release() {
        if (rx_ < 0)
            return;
        char buf[65536];
        int fl = ::fcntl(rx_, F_GETFL);
        ::fcntl(rx_, F_SETFL, fl | O_NONBLOCK);
        for (int i = 0; i < 500 && thread_.joinable() && !done_.load(); i++) {
            while (::read(rx_, buf, sizeof(buf)) > 0) {
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }

private:
    int tx_ = -1, rx_ = -1;
    std::string error_;
    std::thread thread_;
    std::atomic<bool> entered_{false}, done_{false};
};

} // namespace userblk_test
