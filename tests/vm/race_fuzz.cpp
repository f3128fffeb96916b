// userblk_race_fuzz: the control path of userblk.ko from many threads at once.
//
//   userblk_race_fuzz --transport NAME [--seed S] [--iterations N]
//                     [--seconds S] [--threads T]
//
// T threads (default 8, at least 8 for a run that counts) each draw control operations from a
// generator of their own (seeded from S and the thread's number): ADD_DEV, START_DEV,
// OPEN_QUEUE (and what the transport needs before START: a pipe per tag, a data fd, the ring's
// layout and mapping), RING_LAYOUT, STOP_DEV, DEL_DEV and GET_INFO, on a few ids that every
// thread shares and on one id of each thread's own, in whatever interleaving the scheduler
// makes. A quarter of the ADD_DEV, GET_INFO and RING_LAYOUT replies go to a read-only page,
// so that the copy back fails after the kernel did the work. Queue fds live in one table that
// every thread may close an entry of, so a queue is closed by a thread other than the one
// that opened it, also while another uses it. Two more threads serve the queues (answering
// what they find) and two do O_DIRECT I/O on the started disks, so that devices are stopped
// and deleted under I/O. N is the total of control operations (default 4000).
//
// Every call must return: a watchdog fails the run (exit 3) when one takes longer than 30 s.
// At the end every id is deleted. Exit status: 0 done, 1 an unexpected result, 2 bad usage,
// 3 a hang, 77 skip (no userblk.ko). The kernel log is judged by fuzz.py, which runs this.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <uapi/userblk.h>

#include "uapi_test_util.h"

namespace {

using namespace userblk_test;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kSharedIds = 3;
constexpr uint32_t kBaseId = 800;
constexpr size_t kFdSlots = 32;
constexpr long kHangMs = 30000;

uint32_t g_mode = 0;
std::atomic<uint64_t> g_ops{0}, g_unexpected{0};
// What the run got to do: devices added, started and deleted, requests answered, I/Os done.
std::atomic<uint64_t> g_added{0}, g_started{0}, g_deleted{0}, g_answered{0}, g_ios{0};
// Ids started and not deleted since, by bit (id - kBaseId): where the I/O threads go.
std::atomic<uint64_t> g_live{0};
std::atomic<bool> g_stop{false};
int g_ctl = -1;
userblk_dev_config* g_ro_cfg = nullptr;   // a read-only page holding a good config
userblk_ring_layout* g_ro_layout = nullptr; // in the same page
std::array<std::atomic<int>, kFdSlots> g_fds; // queue and data fds, -1 when empty
std::array<std::atomic<uint32_t>, kFdSlots> g_fd_dev;

// The watchdog's view: when each thread's current call began (ms since start, 0 when idle).
std::array<std::atomic<int64_t>, 16> g_since;
std::array<std::atomic<const char*>, 16> g_what;
const Clock::time_point g_t0 = Clock::now();
int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - g_t0).count() + 1;
}

struct InCall {
    InCall(int t, const char* what) : t_(t) {
        g_what[t_] = what;
        g_since[t_] = now_ms();
    }
    ~InCall() { g_since[t_] = 0; }
    int t_;
};

void unexpected(int t, const char* what, int r) {
    g_unexpected++;
    std::fprintf(stderr, "thread %d: %s returned %d (%s)\n", t, what, r,
                 r < 0 ? std::strerror(-r) : "ok");
}

bool one_of(int r, std::initializer_list<int> ok) {
    for (int e : ok)
        if (r == e)
            return true;
    return false;
}

uint32_t any_id(std::mt19937_64& rng, int t) {
    uint32_t k = rng() % (kSharedIds + 1);
    return k < kSharedIds ? kBaseId + k : kBaseId + kSharedIds + uint32_t(t);
}

userblk_dev_config config(uint32_t id, std::mt19937_64& rng) {
    userblk_dev_config c = good_config(g_mode);
    c.dev_id = id;
    c.nr_queues = rng() % 4 ? 1 : 2;
    c.queue_depth = 1 + rng() % 4;
    c.timeout_ms = 300; // requests nobody answers end fast
    return c;
}

void stash_fd(int fd, uint32_t id, std::mt19937_64& rng) {
    size_t slot = rng() % kFdSlots;
    g_fd_dev[slot] = id;
    int old = g_fds[slot].exchange(fd);
    if (old >= 0)
        ::close(old);
}

// What a queue needs before START_DEV, done on the fd just opened.
void ready(int t, int qfd, const userblk_dev_config& c, std::mt19937_64& rng) {
    if (g_mode == USERBLK_MODE_PIPE) {
        for (uint32_t tag = 0; tag < c.queue_depth; tag++) {
            int fds[2];
            if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
                return;
            ::fcntl(fds[1], F_SETPIPE_SZ, int(c.max_io_bytes));
            userblk_pipe_set ps{};
            ps.tag = tag;
            ps.read_fd = fds[0];
            ps.write_fd = fds[1];
            InCall in(t, "PIPE_SET");
            int r = xioctl(qfd, USERBLK_IOC_PIPE_SET, &ps);
            if (!one_of(r, {0, -EBADF, -EINVAL, -EBUSY, -ENODEV, -ENOTTY}))
                unexpected(t, "PIPE_SET", r);
            ::close(fds[0]);
            ::close(fds[1]);
        }
    } else if (g_mode == USERBLK_MODE_SPLICE && rng() % 2) {
        InCall in(t, "SPLICE_DATA_FD");
        int fd = xioctl(qfd, USERBLK_IOC_SPLICE_DATA_FD, 0ul);
        if (fd >= 0)
            stash_fd(fd, c.dev_id, rng);
    } else if (g_mode == USERBLK_MODE_RING) {
        userblk_ring_layout l{};
        InCall in(t, "RING_LAYOUT + mmap");
        bool fault = rng() % 4 == 0;
        int r = xioctl(qfd, USERBLK_IOC_RING_LAYOUT, fault ? g_ro_layout : &l);
        if (fault) {
            if (!one_of(r, {-EFAULT, -EBADF, -ENOTTY}))
                unexpected(t, "RING_LAYOUT into a read-only page", r);
            return;
        }
        if (r != 0)
            return;
        char* area = map_ring_area(qfd, l);
        if (area != nullptr) {
            volatile char c0 = area[0]; // the kernel's part, read-only but there
            (void)c0;
            area[l.daemon_off] = 0; // ours: sq_head's first byte, as it was
            ::munmap(area, l.map_size);
        }
    }
}

void start(int t, uint32_t id) {
    InCall in(t, "START_DEV");
    int r = xioctl(g_ctl, USERBLK_IOC_START_DEV, (unsigned long)id);
    if (!one_of(r, {0, -ENODEV, -EBUSY, -ENOTCONN}))
        unexpected(t, "START_DEV", r);
    if (r == 0) {
        g_started++;
        g_live |= 1ULL << (id - kBaseId);
    }
}

void control_thread(int t, uint64_t seed, uint64_t budget) {
    std::mt19937_64 rng(seed * 1000003 + uint64_t(t));
    while (!g_stop.load() && g_ops.fetch_add(1) < budget) {
        uint32_t id = any_id(rng, t);
        unsigned op = unsigned(rng() % 100);
        if (op < 22) { // ADD_DEV
            bool fault = rng() % 4 == 0;
            userblk_dev_config c = config(id, rng);
            InCall in(t, fault ? "ADD_DEV (read-only reply)" : "ADD_DEV");
            int r;
            if (fault) {
                // The read-only page holds the id of the first shared slot: a shared id.
                r = xioctl(g_ctl, USERBLK_IOC_ADD_DEV, g_ro_cfg);
                if (!one_of(r, {-EFAULT, -EEXIST, -ENOMEM}))
                    unexpected(t, "ADD_DEV into a read-only page", r);
            } else {
                r = xioctl(g_ctl, USERBLK_IOC_ADD_DEV, &c);
                if (!one_of(r, {0, -EEXIST, -ENOMEM}))
                    unexpected(t, "ADD_DEV", r);
                g_added += r == 0;
            }
        } else if (op < 44) { // OPEN_QUEUE, ready it, maybe START_DEV
            userblk_queue_open qo{};
            qo.dev_id = id;
            qo.queue_id = uint16_t(rng() % 2);
            int fd;
            {
                InCall in(t, "OPEN_QUEUE");
                fd = xioctl(g_ctl, USERBLK_IOC_OPEN_QUEUE, &qo);
            }
            if (fd < 0) {
                if (!one_of(fd, {-ENODEV, -EINVAL, -EBUSY, -ESHUTDOWN, -EMFILE}))
                    unexpected(t, "OPEN_QUEUE", fd);
                continue;
            }
            userblk_dev_config info{};
            info.abi_version = USERBLK_ABI_VERSION;
            info.dev_id = id;
            if (xioctl(g_ctl, USERBLK_IOC_GET_INFO, &info) == 0)
                ready(t, fd, info, rng);
            stash_fd(fd, id, rng);
            if (rng() % 2)
                start(t, id);
        } else if (op < 54) { // START_DEV
            start(t, id);
        } else if (op < 64) { // STOP_DEV
            InCall in(t, "STOP_DEV");
            int r = xioctl(g_ctl, USERBLK_IOC_STOP_DEV, (unsigned long)id);
            if (!one_of(r, {0, -ENODEV}))
                unexpected(t, "STOP_DEV", r);
        } else if (op < 76) { // DEL_DEV
            InCall in(t, "DEL_DEV");
            int r = xioctl(g_ctl, USERBLK_IOC_DEL_DEV, (unsigned long)id);
            if (!one_of(r, {0, -ENODEV}))
                unexpected(t, "DEL_DEV", r);
            if (r == 0) {
                g_deleted++;
                g_live &= ~(1ULL << (id - kBaseId));
            }
        } else if (op < 90) { // GET_INFO
            bool fault = rng() % 4 == 0;
            userblk_dev_config info{};
            info.abi_version = USERBLK_ABI_VERSION;
            info.dev_id = id;
            InCall in(t, "GET_INFO");
            int r = xioctl(g_ctl, USERBLK_IOC_GET_INFO, fault ? g_ro_cfg : &info);
            if (!one_of(r, fault ? std::initializer_list<int>{-EFAULT, -ENODEV}
                                 : std::initializer_list<int>{0, -ENODEV}))
                unexpected(t, "GET_INFO", r);
        } else { // close a queue or data fd that some thread opened
            size_t slot = rng() % kFdSlots;
            int fd = g_fds[slot].exchange(-1);
            if (fd >= 0) {
                InCall in(t, "close");
                ::close(fd);
            }
        }
    }
}

// Answers whatever requests the queue fds in the table hold, rightly or with an error.
void server_thread(int t, uint64_t seed) {
    std::mt19937_64 rng(seed ^ 0x5e7e7);
    std::vector<char> buf(USERBLK_COPY_MIN_READ(64 * 1024));
    while (!g_stop.load()) {
        int fd = g_fds[rng() % kFdSlots].load();
        if (fd < 0 || g_mode == USERBLK_MODE_RING) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
            continue;
        }
        pollfd p{fd, POLLIN, 0};
        {
            InCall in(t, "poll");
            if (::poll(&p, 1, 5) <= 0 || (p.revents & (POLLHUP | POLLNVAL)))
                continue;
        }
        int fl = ::fcntl(fd, F_GETFL);
        if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
            continue;
        ssize_t n;
        {
            InCall in(t, "read");
            n = ::read(fd, buf.data(), buf.size());
        }
        if (n < (ssize_t)sizeof(userblk_io_desc))
            continue;
        userblk_io_desc d{};
        std::memcpy(&d, buf.data(), sizeof(d));
        userblk_io_cpl c{};
        c.tag = d.tag;
        c.gen = d.gen;
        c.result = d.op == USERBLK_OP_READ ? -EIO : 0; // a READ's data is the transports' tests
        InCall in(t, "write");
        g_answered += ::write(fd, &c, sizeof(c)) == (ssize_t)sizeof(c);
    }
}

void io_thread(int t, uint64_t seed) {
    std::mt19937_64 rng(seed ^ (0x10 + uint64_t(t)));
    void* mem = std::aligned_alloc(4096, 4096);
    while (!g_stop.load()) {
        uint64_t live = g_live.load();
        if (!live) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
            continue;
        }
        uint32_t id;
        do
            id = uint32_t(rng() % 64);
        while (!(live & (1ULL << id)));
        id += kBaseId;
        std::string path = std::string("/dev/" USERBLK_DISK_PREFIX) + std::to_string(id);
        int fd = ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
        if (fd < 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            continue;
        }
        InCall in(t, "O_DIRECT I/O");
        for (int i = 0; i < 4 && !g_stop.load(); i++) {
            off_t off = off_t(rng() % 1024) * 4096;
            if (rng() % 2)
                (void)!::pread(fd, mem, 4096, off);
            else
                (void)!::pwrite(fd, mem, 4096, off);
            g_ios++;
        }
        ::close(fd);
    }
    std::free(mem);
}

[[noreturn]] void watchdog(int nthreads) {
    for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        for (int t = 0; t < nthreads; t++) {
            int64_t since = g_since[t].load();
            if (since && now_ms() - since > kHangMs) {
                std::fprintf(stderr, "HANG: thread %d has been in %s for %ld ms\n", t,
                             g_what[t].load(), long(now_ms() - since));
                std::fflush(stderr);
                ::_exit(3);
            }
        }
    }
}

void usage(FILE* f) {
    std::fprintf(f, "usage: userblk_race_fuzz --transport NAME (a userblk.ko transport) [--seed S] "
                    "[--iterations N] [--seconds S] [--threads T]\n");
}

} // namespace

int main(int argc, char** argv) {
    std::string transport;
    uint64_t seed = 1, budget = 4000;
    double seconds = 60;
    int threads = 8;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        std::string v = argv[++i];
        if (a == "--transport")
            transport = v;
        else if (a == "--seed")
            seed = std::stoull(v);
        else if (a == "--iterations")
            budget = std::stoull(v);
        else if (a == "--seconds")
            seconds = std::stod(v);
        else if (a == "--threads")
            threads = std::stoi(v);
        else {
            usage(stderr);
            return 2;
        }
    }
    g_mode = mode_of(transport);
    if (g_mode == 0 || threads < 1 || threads > 12) {
        usage(stderr);
        return 2;
    }
    g_ctl = ::open(USERBLK_CONTROL_PATH, O_RDWR | O_CLOEXEC);
    if (g_ctl < 0) {
        std::printf("SKIP: %s: %s\n", USERBLK_CONTROL_PATH, std::strerror(errno));
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    const long page = ::sysconf(_SC_PAGESIZE);
    void* ro = ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_ro_cfg = static_cast<userblk_dev_config*>(ro);
    *g_ro_cfg = good_config(g_mode);
    g_ro_cfg->dev_id = kBaseId;
    g_ro_cfg->timeout_ms = 300;
    g_ro_layout = reinterpret_cast<userblk_ring_layout*>(static_cast<char*>(ro) + 1024);
    ::mprotect(ro, page, PROT_READ);
    for (auto& f : g_fds)
        f = -1;

    const int helpers = 3; // a server and two I/O threads
    std::thread(watchdog, threads + helpers).detach();
    std::vector<std::thread> all;
    for (int t = 0; t < threads; t++)
        all.emplace_back(control_thread, t, seed, budget);
    std::vector<std::thread> side;
    side.emplace_back(server_thread, threads, seed);
    side.emplace_back(io_thread, threads + 1, seed);
    side.emplace_back(io_thread, threads + 2, seed);
    std::thread timer([seconds] {
        auto end = Clock::now() + std::chrono::duration<double>(seconds);
        while (!g_stop.load() && Clock::now() < end)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        g_stop = true;
    });
    for (auto& t : all)
        t.join();
    g_stop = true;
    timer.join();
    for (auto& t : side)
        t.join();
    for (auto& f : g_fds) {
        int fd = f.exchange(-1);
        if (fd >= 0)
            ::close(fd);
    }
    for (uint32_t id = kBaseId; id < kBaseId + kSharedIds + uint32_t(threads); id++)
        xioctl(g_ctl, USERBLK_IOC_DEL_DEV, (unsigned long)id);
    uint64_t done = std::min<uint64_t>(g_ops.load(), budget);
    std::printf("race fuzz %s: seed %llu, %d threads, %llu control operations (%llu devices "
                "added, %llu started, %llu deleted; %llu requests answered, %llu I/Os), "
                "%llu unexpected\n",
                transport.c_str(), (unsigned long long)seed, threads, (unsigned long long)done,
                (unsigned long long)g_added.load(), (unsigned long long)g_started.load(),
                (unsigned long long)g_deleted.load(), (unsigned long long)g_answered.load(),
                (unsigned long long)g_ios.load(), (unsigned long long)g_unexpected.load());
    return g_unexpected.load() ? 1 : 0;
}
