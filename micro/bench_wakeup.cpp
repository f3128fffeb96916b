// Wake-up cost: a ping-pong between two threads, one round trip per iteration (a request handed
// to a daemon thread and its completion handed back). eventfd, futex, pipe and poll() sleep in
// the kernel; the shared-memory ring handoff runs the ring transport's own index code, once with
// both sides busy-polling the indices (no syscall at all) and once sleeping on them with futex.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <thread>

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fake_ring.h"
#include "scratch.h"

namespace userblk::micro {

namespace {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

long futex_wait(std::uint32_t* addr, std::uint32_t expected) noexcept {
    return ::syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

long futex_wake(std::uint32_t* addr) noexcept {
    return ::syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

/// One direction of the ping-pong over an eventfd (poll first with use_poll).
class EventfdLink {
public:
    explicit EventfdLink(bool use_poll)
        : fd_(::eventfd(0, EFD_CLOEXEC | (use_poll ? EFD_NONBLOCK : 0))), poll_(use_poll) {}
    [[nodiscard]] bool ok() const noexcept { return fd_.valid(); }
    bool signal() noexcept {
        std::uint64_t one = 1;
        return ::write(fd_.get(), &one, sizeof(one)) == sizeof(one);
    }
    bool wait() noexcept {
        std::uint64_t v = 0;
        for (;;) {
            if (poll_) {
                pollfd p{fd_.get(), POLLIN, 0};
                if (::poll(&p, 1, -1) < 0 && errno != EINTR) {
                    return false;
                }
            }
            ssize_t n = ::read(fd_.get(), &v, sizeof(v));
            if (n == sizeof(v)) {
                return true;
            }
            if (n < 0 && errno != EINTR && errno != EAGAIN) {
                return false;
            }
        }
    }

private:
    unique_fd fd_;
    bool poll_;
};

/// One direction over a pipe: one byte each way.
class PipeLink {
public:
    PipeLink() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) == 0) {
            r_.reset(fds[0]);
            w_.reset(fds[1]);
        }
    }
    [[nodiscard]] bool ok() const noexcept { return r_.valid(); }
    bool signal() noexcept {
        char c = 1;
        return ::write(w_.get(), &c, 1) == 1;
    }
    bool wait() noexcept {
        char c = 0;
        for (;;) {
            ssize_t n = ::read(r_.get(), &c, 1);
            if (n == 1) {
                return true;
            }
            if (n < 0 && errno != EINTR) {
                return false;
            }
        }
    }

private:
    unique_fd r_;
    unique_fd w_;
};

/// One direction over a futex word: a sequence number, waited on until it moves.
class FutexLink {
public:
    [[nodiscard]] bool ok() const noexcept { return true; }
    bool signal() noexcept {
        std::atomic_ref(word_).fetch_add(1, std::memory_order_release);
        futex_wake(&word_);
        return true;
    }
    bool wait() noexcept {
        std::uint32_t v;
        while ((v = std::atomic_ref(word_).load(std::memory_order_acquire)) == seen_) {
            futex_wait(&word_, seen_);
        }
        seen_ = v;
        return true;
    }

private:
    alignas(64) std::uint32_t word_ = 0;
    std::uint32_t seen_ = 0; // the waiter's
};

/// Main thread: ping over a, wait for the pong over b; the partner thread does the reverse.
template <class Link>
void ping_pong(benchmark::State& state, Link& a, Link& b) {
    if (!a.ok() || !b.ok()) {
        state.SkipWithError(errno_text("wake-up channel").c_str());
        return;
    }
    std::atomic<bool> stop{false};
    std::thread partner([&] {
        while (a.wait() && !stop.load(std::memory_order_relaxed) && b.signal()) {
        }
    });
    for (auto _ : state) {
        if (!a.signal() || !b.wait()) {
            state.SkipWithError(errno_text("ping-pong").c_str());
            break;
        }
    }
    stop.store(true, std::memory_order_relaxed);
    a.signal();
    partner.join();
    set_op_counters(state, 1, 0);
}

void wake_eventfd(benchmark::State& state) {
    EventfdLink a(false);
    EventfdLink b(false);
    ping_pong(state, a, b);
}

void wake_poll(benchmark::State& state) {
    EventfdLink a(true);
    EventfdLink b(true);
    ping_pong(state, a, b);
}

void wake_pipe(benchmark::State& state) {
    PipeLink a;
    PipeLink b;
    ping_pong(state, a, b);
}

void wake_futex(benchmark::State& state) {
    FutexLink a;
    FutexLink b;
    ping_pong(state, a, b);
}

/// The ring handoff: the main thread plays the kernel (publishes one request, waits for its
/// completion), the partner thread is the daemon (daemon_pass()). busy: both spin on the other's
/// index; otherwise they sleep on it with futex and the publisher wakes the other.
void wake_ring(benchmark::State& state, bool busy) {
    FakeRingArea area(32, 4096);
    if (!area.problem().empty()) {
        state.SkipWithError(("ring layout: " + area.problem()).c_str());
        return;
    }
    userblk_ring_kernel_indices& kidx = area.kernel_indices();
    userblk_ring_daemon_indices& didx = area.daemon_indices();
    ring::SharedRing daemon = area.daemon();
    std::atomic<bool> stop{false};
    std::atomic<bool> failed{false};
    std::thread partner([&] {
        std::uint32_t head = 0;
        std::uint32_t cq_tail = 0;
        while (!stop.load(std::memory_order_relaxed)) {
            if (daemon.sq_tail() == head) {
                if (busy) {
                    cpu_relax();
                } else {
                    futex_wait(&kidx.sq_tail, head);
                }
                continue;
            }
            if (daemon_pass(daemon, head, cq_tail) < 0) {
                failed.store(true);
                return;
            }
            if (!busy) {
                futex_wake(&didx.cq_tail);
            }
        }
    });
    userblk_io_desc d{};
    d.op = USERBLK_OP_READ;
    d.len = 4096;
    for (auto _ : state) {
        area.kernel_publish(d);
        if (!busy) {
            futex_wake(&kidx.sq_tail);
        }
        const std::uint32_t head = area.kernel_cq_head();
        std::uint32_t tail;
        while ((tail = area.kernel_cq_tail()) == head && !failed.load(std::memory_order_relaxed)) {
            if (busy) {
                cpu_relax();
            } else {
                futex_wait(&didx.cq_tail, head);
            }
        }
        if (tail == head) {
            break; // the daemon failed
        }
        benchmark::DoNotOptimize(area.kernel_take(tail));
        ++d.gen;
    }
    // A last request moves sq_tail, so a daemon about to sleep on it cannot miss the stop.
    stop.store(true);
    area.kernel_publish(d);
    futex_wake(&kidx.sq_tail);
    partner.join();
    if (failed.load()) {
        state.SkipWithError("ring: the daemon found the submission tail out of range");
        return;
    }
    set_op_counters(state, 1, 0);
}

} // namespace

void register_wakeup() {
    benchmark::RegisterBenchmark("wakeup/eventfd", wake_eventfd)->UseRealTime();
    benchmark::RegisterBenchmark("wakeup/futex", wake_futex)->UseRealTime();
    benchmark::RegisterBenchmark("wakeup/pipe", wake_pipe)->UseRealTime();
    benchmark::RegisterBenchmark("wakeup/poll", wake_poll)->UseRealTime();
    benchmark::RegisterBenchmark("wakeup/ring:busy-poll", wake_ring, true)->UseRealTime();
    benchmark::RegisterBenchmark("wakeup/ring:futex", wake_ring, false)->UseRealTime();
}

} // namespace userblk::micro
