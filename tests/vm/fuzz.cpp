// userblk_fuzz: random and boundary values at every ioctl of userblk.ko and at the queue and
// data fds of one transport, while devices come and go and O_DIRECT I/O is in flight.
//
//   userblk_fuzz --transport NAME [--seed S] [--iterations N] [--seconds S]
//
// Runs as root where userblk.ko is loaded (tests/vm/fuzz.py loads it and checks the kernel log).
// One main thread draws every action from a seeded generator: devices are added (good or
// mutated configurations), queues opened, started, stopped, deleted, queues closed; a fake
// daemon serves the queues, answering correctly, with garbage or not at all; and every syscall
// of the uapi is thrown boundary values and bad pointers. Two I/O threads read and write the
// live disks with O_DIRECT so requests are in flight.
//
// Every syscall must return: a watchdog interrupts the main thread's interruptible sleeps
// after 0.5 s (SIGUSR1, no SA_RESTART) and fails the run (exit 3) with the seed and the last
// actions when any call of any thread outlasts its bound. At the end every device is deleted.
// Exit status: 0 done, 1 a check failed, 2 bad usage, 3 a hang, 77 skip (no userblk.ko).
//
// It speaks the raw uapi, like badinput_test.cpp, so it tests the kernel and nothing else. The
// choices are a function of the seed and of the kernel's answers; the I/O threads make the
// timing, and so the answers, vary between runs: a seed reproduces the sequence of actions,
// not always the interleaving (--trace prints every action).

#include <execinfo.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <uapi/userblk.h>

#include "registry_mode.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr long kSoftBoundMs = 500;         // then SIGUSR1 interrupts the main thread's sleep
constexpr long kMainHardBoundMs = 20000;   // a main-thread syscall longer than this hangs
constexpr long kIoHardBoundMs = 60000;     // an O_DIRECT I/O: timeout (<= 3 s) + a TCG margin
constexpr uint32_t kMaxIoTimeoutMs = 3000; // I/O only on devices that time out this fast
constexpr size_t kMaxDevices = 6;
// A ring queue's area is vmalloc'ed at ADD_DEV: keep a device under this (the VM has 2 GiB).
constexpr uint64_t kRingBudget = 192ull << 20;
constexpr int kClosedFd = 900; // a descriptor number this program never opens

uint64_t g_seed = 0;
int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
        .count();
}

// -- the log of recent actions, printed when something goes wrong -----------------------

std::mutex g_log_mutex;
std::array<std::string, 48> g_log;
size_t g_log_next = 0;
bool g_trace = false;
uint64_t g_iteration = 0;

void note(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char* fmt, ...) {
    char line[320];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    std::lock_guard lock(g_log_mutex);
    std::string s = "#" + std::to_string(g_iteration) + " " + line;
    if (g_trace)
        std::fprintf(stderr, "%s\n", s.c_str());
    g_log[g_log_next++ % g_log.size()] = std::move(s);
}

void dump_log() {
    std::lock_guard lock(g_log_mutex);
    std::fprintf(stderr, "last actions (oldest first):\n");
    for (size_t i = 0; i < g_log.size(); i++) {
        const std::string& s = g_log[(g_log_next + i) % g_log.size()];
        if (!s.empty())
            std::fprintf(stderr, "  %s\n", s.c_str());
    }
}

// -- the watchdog -----------------------------------------------------------------------

// A thread's syscall in progress: its start (ms, 0 when idle) and what it is.
struct Slot {
    std::atomic<int64_t> since{0};
    std::atomic<const char*> what{""};
    pthread_t thread{};
    long hard_ms = 0;
    bool interruptible = false;
    const char* name = "";
};
Slot g_main_slot, g_io_slots[2];
std::atomic<bool> g_stop{false};     // the I/O threads end
std::atomic<bool> g_dog_stop{false}; // the watchdog ends, after them

struct InCall {
    Slot& s;
    InCall(Slot& slot, const char* what) : s(slot) {
        s.what = what;
        s.since = now_ms();
    }
    ~InCall() { s.since = 0; }
};

void print_stack_of_tasks() {
    // The kernel stacks of every thread of this process: where a hang sleeps (root only).
    for (int tid : {static_cast<int>(::getpid())}) {
        std::string dir = "/proc/" + std::to_string(tid) + "/task";
        std::string cmd = "for t in " + dir + "/*; do echo \"task $t:\"; cat $t/stack; done >&2";
        if (std::system(cmd.c_str()) != 0)
            std::fprintf(stderr, "(no kernel stacks)\n");
    }
}

void watchdog() {
    int64_t last_kick = 0;
    while (!g_dog_stop.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        int64_t t = now_ms();
        for (Slot* s : {&g_main_slot, &g_io_slots[0], &g_io_slots[1]}) {
            int64_t since = s->since.load();
            if (since == 0)
                continue;
            if (s->interruptible && t - since > kSoftBoundMs && t - last_kick > 100) {
                pthread_kill(s->thread, SIGUSR1);
                last_kick = t;
            }
            if (t - since > s->hard_ms) {
                std::fprintf(stderr,
                             "HANG: the %s thread's %s has not returned in %ld ms "
                             "(seed %llu, iteration %llu)\n",
                             s->name, s->what.load(), s->hard_ms,
                             static_cast<unsigned long long>(g_seed),
                             static_cast<unsigned long long>(g_iteration));
                dump_log();
                print_stack_of_tasks();
                std::fflush(stderr);
                ::_exit(3);
            }
        }
    }
}

// -- raw syscalls (no libc or sanitizer interceptor looks at the fuzzed pointers) -------

long sys(long r) {
    return r < 0 ? -errno : r;
}
long x_ioctl(int fd, unsigned long cmd, unsigned long arg) {
    InCall c(g_main_slot, "ioctl");
    return sys(::syscall(SYS_ioctl, fd, cmd, arg));
}
long x_read(int fd, void* p, size_t n) {
    InCall c(g_main_slot, "read");
    return sys(::syscall(SYS_read, fd, p, n));
}
long x_write(int fd, const void* p, size_t n) {
    InCall c(g_main_slot, "write");
    return sys(::syscall(SYS_write, fd, p, n));
}
long x_pread(int fd, void* p, size_t n, uint64_t off) {
    InCall c(g_main_slot, "pread");
    return sys(::syscall(SYS_pread64, fd, p, n, off));
}
long x_pwrite(int fd, const void* p, size_t n, uint64_t off) {
    InCall c(g_main_slot, "pwrite");
    return sys(::syscall(SYS_pwrite64, fd, p, n, off));
}
long x_close(int fd) {
    InCall c(g_main_slot, "close");
    return sys(::syscall(SYS_close, fd));
}

// -- values -----------------------------------------------------------------------------

class Rng {
public:
    explicit Rng(uint64_t seed) : g_(seed) {}
    uint64_t next() { return g_(); }
    uint64_t below(uint64_t n) { return n ? g_() % n : 0; }
    bool chance(unsigned pct) { return below(100) < pct; }
    template <typename T>
    const T& pick(const std::vector<T>& v) {
        return v[below(v.size())];
    }
    // A boundary value, a small number or random bits.
    uint64_t value() {
        static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
        static const std::vector<uint64_t> edges = {
            0,
            1,
            2,
            3,
            7,
            8,
            511,
            512,
            513,
            1023,
            1024,
            1025,
            page - 1,
            page,
            page + 1,
            2 * page,
            65535,
            65536,
            65537,
            1u << 20,
            (1u << 20) + 1,
            1u << 21,
            1u << 30,
            0x7fffffff,
            0x80000000u,
            0xffffffffu,
            0x100000000ull,
            INT64_MAX,
            0x8000000000000000ull,
            UINT64_MAX,
            UINT64_MAX - 1,
            UINT64_MAX - page + 1,
            USERBLK_MAX_QUEUES,
            USERBLK_MAX_DEPTH,
            USERBLK_MAX_DEPTH + 1,
            USERBLK_MAX_DEVICES,
            USERBLK_DEV_ID_ANY,
            USERBLK_MAX_IO_BYTES,
            USERBLK_MAX_TIMEOUT_MS,
            1ull << USERBLK_SPLICE_TAG_SHIFT,
        };
        switch (below(4)) {
        case 0:
        case 1:
            return pick(edges);
        case 2:
            return below(4096);
        default:
            return next() >> below(64);
        }
    }

private:
    std::mt19937_64 g_;
};

// Memory to point the kernel at: good, read-only, at the edge of a hole, unmapped, kernel.
struct Memory {
    size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    size_t big_len = 4u << 20;
    char* big = nullptr;      // read-write, 4 MiB (a max I/O plus a descriptor fits)
    char* ro = nullptr;       // one read-only page
    char* edge = nullptr;     // one read-write page followed by a PROT_NONE page
    char* unmapped = nullptr; // an address mapped once and unmapped

    Memory() {
        big = static_cast<char*>(map(big_len, PROT_READ | PROT_WRITE));
        ro = static_cast<char*>(map(page, PROT_READ | PROT_WRITE));
        std::memset(ro, 0x5a, page);
        ::mprotect(ro, page, PROT_READ);
        edge = static_cast<char*>(map(2 * page, PROT_READ | PROT_WRITE));
        ::mprotect(edge + page, page, PROT_NONE);
        unmapped = static_cast<char*>(map(16 * page, PROT_READ));
        ::munmap(unmapped, 16 * page);
    }
    static void* map(size_t len, int prot) {
        void* p = ::mmap(nullptr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            std::perror("userblk_fuzz: mmap of its own buffers");
            std::exit(1);
        }
        return p;
    }
    // A pointer for the kernel to read or write, and what it is.
    std::pair<void*, const char*> pointer(Rng& r) {
        switch (r.below(12)) {
        case 0:
            return {nullptr, "NULL"};
        case 1:
            return {reinterpret_cast<void*>(16), "16"};
        case 2:
            return {unmapped, "unmapped"};
        case 3:
            return {ro, "read-only"};
        case 4:
            return {reinterpret_cast<void*>(0xffffffff81000000ull), "kernel text"};
        case 5:
            return {reinterpret_cast<void*>(0xffff888000000000ull), "kernel direct map"};
        case 6:
            return {reinterpret_cast<void*>(~0ull), "-1"};
        case 7:
            return {big + 1 + r.below(7), "misaligned"};
        case 8:
            return {edge + page - r.below(64), "edge of a hole"};
        default:
            return {big, "good"};
        }
    }
    // A length to go with a pointer.
    size_t length(Rng& r) {
        if (r.chance(60))
            return r.below(big_len + 1);
        return static_cast<size_t>(r.value());
    }
};

// -- what the fuzzer holds ----------------------------------------------------------------

struct Fd {
    int fd = -1;
    Fd() = default;
    explicit Fd(int f) : fd(f) {}
    Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        reset(std::exchange(o.fd, -1));
        return *this;
    }
    ~Fd() { reset(); }
    void reset(int f = -1) {
        if (fd >= 0)
            x_close(fd);
        fd = f;
    }
};

struct Mapping {
    void* addr = nullptr;
    size_t len = 0;
    Mapping() = default;
    Mapping(void* a, size_t l) : addr(a), len(l) {}
    Mapping(Mapping&& o) noexcept : addr(std::exchange(o.addr, nullptr)), len(o.len) {}
    Mapping& operator=(Mapping&& o) noexcept {
        reset();
        addr = std::exchange(o.addr, nullptr);
        len = o.len;
        return *this;
    }
    ~Mapping() { reset(); }
    void reset() {
        if (addr)
            ::munmap(addr, len);
        addr = nullptr;
    }
};

struct Queue {
    uint32_t dev_id = 0;
    uint16_t id = 0;
    userblk_dev_config cfg{};
    Fd fd;
    // ring
    Mapping ring;
    userblk_ring_layout layout{};
    uint32_t sq_head = 0, cq_tail = 0;
    // pipe: a pipe per tag, [tag] = {read end, write end}
    std::vector<std::pair<Fd, Fd>> pipes;
    // splice
    std::vector<Fd> data_fds;
    std::vector<uint32_t> gens; // by tag: the gen of the last request handed out on it
    uint32_t gen_of(uint64_t tag) const { return tag < gens.size() ? gens[tag] : 0; }
};

struct Device {
    userblk_dev_config cfg{};
    bool started = false;
    std::vector<std::unique_ptr<Queue>> queues; // by queue id; null when not open
};

// The disks the I/O threads may use: started devices that time out fast.
std::mutex g_disks_mutex;
std::vector<std::string> g_disks;

using userblk_test::mode_of;

// -- probing mappings the kernel gave us -------------------------------------------------

sigjmp_buf g_probe_jmp;
volatile sig_atomic_t g_probing = 0;
pthread_t g_main_thread{}; // the only thread that probes

// A fault outside a probe is the fuzzer's own crash: say where, and what it was doing, before
// the signal kills it (not async-signal-safe, but the process is dying anyway; the log is
// printed only if no thread holds it, so a crash inside note() cannot deadlock here).
void fatal_fault(int sig, siginfo_t* si) {
    char line[200];
    char where[48];
    if (si->si_code <= 0) // sent, not a fault
        std::snprintf(where, sizeof(where), "sent by pid %d", static_cast<int>(si->si_pid));
    else
        std::snprintf(where, sizeof(where), "at address %p", si->si_addr);
    int n = std::snprintf(
        line, sizeof(line), "CRASH: %s %s in the %s thread (seed %llu, iteration %llu)\n",
        sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", where,
        pthread_equal(pthread_self(), g_main_thread) ? "main" : "I/O or watchdog",
        static_cast<unsigned long long>(g_seed), static_cast<unsigned long long>(g_iteration));
    if (n > 0)
        (void)!::write(STDERR_FILENO, line, std::min<size_t>(static_cast<size_t>(n), sizeof(line)));
    void* frames[32];
    int depth = ::backtrace(frames, 32); // glibc's execinfo: no library of ours does this
    ::backtrace_symbols_fd(frames, depth, STDERR_FILENO);
    if (g_log_mutex.try_lock()) {
        g_log_mutex.unlock();
        dump_log();
    }
    std::fflush(stderr);
}

void probe_fault(int sig, siginfo_t* si, void*) {
    if (g_probing && pthread_equal(pthread_self(), g_main_thread))
        siglongjmp(g_probe_jmp, sig);
    fatal_fault(sig, si);
    signal(sig, SIG_DFL);
    raise(sig);
}
void on_usr1(int) {}

// Touch the first and last byte of a mapping; a SIGBUS or SIGSEGV there is the kernel saying
// "not here", not a crash.
int probe(void* addr, size_t len, bool write) {
    int sig = sigsetjmp(g_probe_jmp, 1);
    if (sig) {
        g_probing = 0;
        return sig;
    }
    g_probing = 1;
    volatile char* p = static_cast<volatile char*>(addr);
    char c = p[0];
    c = static_cast<char>(c + p[len - 1]);
    if (write)
        p[0] = c;
    g_probing = 0;
    return 0;
}

// -- the fuzzer -------------------------------------------------------------------------

class Fuzzer {
public:
    Fuzzer(uint32_t mode, uint64_t seed) : mode_(mode), r_(seed) {}

    int open_control() {
        ctl_ = Fd(::open(USERBLK_CONTROL_PATH, O_RDWR | O_CLOEXEC));
        if (ctl_.fd < 0) {
            std::fprintf(stderr, "userblk_fuzz: %s: %s\n", USERBLK_CONTROL_PATH,
                         std::strerror(errno));
            return -1;
        }
        null_ = Fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
        return 0;
    }

    void step() {
        static constexpr struct {
            void (Fuzzer::*fn)();
            unsigned weight;
        } actions[] = {
            {&Fuzzer::add_good, 4},      {&Fuzzer::add_mutated, 6},   {&Fuzzer::bring_up, 5},
            {&Fuzzer::open_queue, 8},    {&Fuzzer::prepare_queue, 6}, {&Fuzzer::start, 6},
            {&Fuzzer::stop, 2},          {&Fuzzer::del, 3},           {&Fuzzer::close_queue, 2},
            {&Fuzzer::get_info, 3},      {&Fuzzer::serve, 30},        {&Fuzzer::control_ioctl, 6},
            {&Fuzzer::queue_ioctl, 8},   {&Fuzzer::queue_read, 5},    {&Fuzzer::queue_write, 6},
            {&Fuzzer::queue_mmap, 4},    {&Fuzzer::data_fd_io, 6},    {&Fuzzer::splice_io, 4},
            {&Fuzzer::poll_fds, 3},      {&Fuzzer::pipe_set, 4},      {&Fuzzer::control_rw, 1},
            {&Fuzzer::ring_scribble, 3},
        };
        unsigned total = 0;
        for (const auto& a : actions)
            total += a.weight;
        uint64_t x = r_.below(total);
        for (const auto& a : actions) {
            if (x < a.weight) {
                (this->*a.fn)();
                return;
            }
            x -= a.weight;
        }
    }

    // Delete everything this run made; 0 if every device is gone.
    int finish() {
        int bad = 0;
        {
            std::lock_guard lock(g_disks_mutex);
            g_disks.clear();
        }
        for (auto& [id, d] : devices_) {
            long r = x_ioctl(ctl_.fd, USERBLK_IOC_DEL_DEV, id);
            note("final DEL_DEV %u -> %ld", id, r);
        }
        for (auto& [id, d] : devices_) {
            userblk_dev_config info{};
            info.abi_version = USERBLK_ABI_VERSION;
            info.dev_id = id;
            long r = x_ioctl(ctl_.fd, USERBLK_IOC_GET_INFO, reinterpret_cast<unsigned long>(&info));
            if (r != -ENODEV) {
                std::fprintf(
                    stderr, "FAIL: device %u is still there after DEL_DEV (GET_INFO %ld)\n", id, r);
                bad = 1;
            }
        }
        devices_.clear();
        zombies_.clear();
        return bad;
    }

    size_t devices_added() const { return added_; }
    size_t devices_started() const { return started_; }
    size_t requests_answered() const { return answered_; }

private:
    // -- helpers ---------------------------------------------------------------------

    Device* any_device() {
        if (devices_.empty())
            return nullptr;
        auto it = devices_.begin();
        std::advance(it, static_cast<long>(r_.below(devices_.size())));
        return &it->second;
    }
    Queue* any_queue(bool with_zombies = true) {
        std::vector<Queue*> qs;
        for (auto& [id, d] : devices_)
            for (auto& q : d.queues)
                if (q)
                    qs.push_back(q.get());
        if (with_zombies)
            for (auto& q : zombies_)
                qs.push_back(q.get());
        return qs.empty() ? nullptr : qs[r_.below(qs.size())];
    }
    // A device id: one of ours, a boundary value, or one near ours.
    uint32_t any_id() {
        Device* d = any_device();
        if (d && r_.chance(70))
            return d->cfg.dev_id;
        if (d && r_.chance(30))
            return d->cfg.dev_id + 1;
        return static_cast<uint32_t>(r_.value());
    }
    // An fd to hand the kernel: ours of every kind, or no fd at all.
    int any_fd() {
        switch (r_.below(9)) {
        case 0:
            return ctl_.fd;
        case 1:
            return null_.fd;
        case 2:
            return kClosedFd;
        case 3:
            return -1;
        case 4: {
            int fd = static_cast<int>(r_.value());
            return fd >= 0 && fd <= 2 ? kClosedFd : fd; // never our stdin, stdout or stderr
        }
        default: {
            Queue* q = any_queue();
            if (!q)
                return ctl_.fd;
            if (!q->pipes.empty() && r_.chance(40)) {
                auto& p = q->pipes[r_.below(q->pipes.size())];
                return r_.chance(50) ? p.first.fd : p.second.fd;
            }
            if (!q->data_fds.empty() && r_.chance(40))
                return q->data_fds[r_.below(q->data_fds.size())].fd;
            return q->fd.fd;
        }
        }
    }
    int any_queue_or_data_fd() {
        Queue* q = any_queue();
        if (!q)
            return ctl_.fd;
        if (!q->data_fds.empty() && r_.chance(30))
            return q->data_fds[r_.below(q->data_fds.size())].fd;
        return q->fd.fd;
    }

    userblk_dev_config good_config() {
        userblk_dev_config c{};
        c.abi_version = USERBLK_ABI_VERSION;
        c.dev_id = USERBLK_DEV_ID_ANY;
        c.mode = mode_;
        c.logical_block_size = r_.chance(70) ? 512 : 4096;
        c.size = (1 + r_.below(64)) << 20;
        c.features = r_.below(USERBLK_F_ALL + 1) & ~static_cast<uint64_t>(USERBLK_F_READ_ONLY);
        c.nr_queues = 1 + static_cast<uint32_t>(r_.below(3));
        c.queue_depth = 1 + static_cast<uint32_t>(r_.below(8));
        c.max_io_bytes = (4096u << r_.below(7)); // 4 KiB .. 256 KiB
        c.timeout_ms =
            USERBLK_MIN_TIMEOUT_MS + static_cast<uint32_t>(r_.below(kMaxIoTimeoutMs - 100));
        return c;
    }

    static uint64_t ring_bytes(const userblk_dev_config& c) {
        uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
        uint64_t io = c.max_io_bytes ? c.max_io_bytes : (1u << 20);
        uint64_t per_queue = (std::min<uint64_t>(c.queue_depth, USERBLK_MAX_DEPTH) + 1) *
                             ((io + page - 1) / page * page);
        return std::min<uint64_t>(c.nr_queues, USERBLK_MAX_QUEUES) *
               std::min<uint64_t>(per_queue, 256ull << 20);
    }

    void track(const userblk_dev_config& c) {
        Device d;
        d.cfg = c;
        d.queues.resize(std::min<uint32_t>(c.nr_queues, USERBLK_MAX_QUEUES));
        devices_[c.dev_id] = std::move(d);
        added_++;
    }

    void add(userblk_dev_config c, bool bad_pointer, const char* what) {
        if (devices_.size() >= kMaxDevices) {
            del();
            return;
        }
        unsigned long arg = reinterpret_cast<unsigned long>(&c);
        const char* ptr = "good";
        if (bad_pointer) {
            auto [p, name] = mem_.pointer(r_);
            arg = reinterpret_cast<unsigned long>(p);
            ptr = name;
            if (p == mem_.big) // the good buffer: a config in it, maybe cut by the page edge
                std::memcpy(mem_.big, &c, sizeof(c));
        }
        long r = x_ioctl(ctl_.fd, USERBLK_IOC_ADD_DEV, arg);
        note("ADD_DEV %s (ptr %s, mode %u q %u d %u io %u lbs %u size %llu to %u) -> %ld", what,
             ptr, c.mode, c.nr_queues, c.queue_depth, c.max_io_bytes, c.logical_block_size,
             static_cast<unsigned long long>(c.size), c.timeout_ms, r);
        if (r == 0) {
            if (arg != reinterpret_cast<unsigned long>(&c))
                std::memcpy(&c, reinterpret_cast<void*>(arg), sizeof(c));
            track(c);
            last_added_ = c.dev_id;
        }
    }

    // -- lifecycle ----------------------------------------------------------------------

    void add_good() { add(good_config(), false, "good"); }

    // A good device all the way up: added, every queue open and ready, started.
    void bring_up() {
        size_t before = added_;
        add_good();
        if (added_ == before)
            return;
        uint32_t id = last_added_;
        Device& dev = devices_.at(id);
        for (uint16_t q = 0; q < dev.queues.size(); q++) {
            userblk_queue_open qo{};
            qo.dev_id = id;
            qo.queue_id = q;
            long r = x_ioctl(ctl_.fd, USERBLK_IOC_OPEN_QUEUE, reinterpret_cast<unsigned long>(&qo));
            if (r < 0) {
                note("bring up %u: OPEN_QUEUE %u -> %ld", id, q, r);
                return;
            }
            auto queue = std::make_unique<Queue>();
            queue->dev_id = id;
            queue->id = q;
            queue->cfg = dev.cfg;
            queue->fd = Fd(static_cast<int>(r));
            ::fcntl(queue->fd.fd, F_SETFL, O_NONBLOCK);
            dev.queues[q] = std::move(queue);
            prepare(*dev.queues[q]);
        }
        long r = x_ioctl(ctl_.fd, USERBLK_IOC_START_DEV, id);
        note("bring up %u: START_DEV -> %ld", id, r);
        if (r == 0) {
            dev.started = true;
            started_++;
            publish_disks();
        }
    }

    void add_mutated() {
        userblk_dev_config c = good_config();
        for (uint64_t n = 1 + r_.below(3); n > 0; n--) {
            uint64_t v = r_.value();
            switch (r_.below(15)) {
            case 0:
                c.abi_version = static_cast<uint32_t>(v);
                break;
            case 1:
                c.dev_id = r_.chance(50) ? static_cast<uint32_t>(r_.below(USERBLK_MAX_DEVICES + 2))
                                         : static_cast<uint32_t>(v);
                break;
            case 2:
                c.mode = static_cast<uint32_t>(r_.chance(50) ? r_.below(USERBLK_MODE_END + 1) : v);
                break;
            case 3:
                c.logical_block_size = static_cast<uint32_t>(v);
                break;
            case 4:
                c.size = v;
                break;
            case 5:
                c.features = r_.chance(50) ? r_.below(32) : v;
                break;
            case 6:
                c.nr_queues = static_cast<uint32_t>(v);
                break;
            case 7:
                c.queue_depth = static_cast<uint32_t>(v);
                break;
            case 8:
                c.max_io_bytes = static_cast<uint32_t>(v);
                break;
            case 9:
                c.timeout_ms = static_cast<uint32_t>(v);
                break;
            case 10:
                c.state = static_cast<uint32_t>(v);
                break;
            case 11:
                if (r_.chance(50)) {
                    c.nr_poll_queues = static_cast<uint32_t>(r_.chance(50) ? r_.below(4) : v);
                } else {
                    c.nr_queues_open = static_cast<uint32_t>(v);
                }
                break;
            case 12:
                if (r_.chance(25)) {
                    c.recovery_timeout_ms = static_cast<uint32_t>(v);
                } else {
                    c.reserved[r_.below(3)] = v;
                }
                break;
            case 13:
                c.timeout_ms = 0;
                c.max_io_bytes = 0;
                break; // the module's defaults
            default:
                c.features |= USERBLK_F_READ_ONLY;
                break;
            }
        }
        // Never ask the VM for more vmalloc than it has (see the report of issue 9).
        if ((c.mode == USERBLK_MODE_RING) && ring_bytes(c) > kRingBudget) {
            note("ADD_DEV mutated: skipped, a ring area of %llu MiB",
                 static_cast<unsigned long long>(ring_bytes(c) >> 20));
            return;
        }
        add(c, r_.chance(15), "mutated");
    }

    void open_queue() {
        userblk_queue_open qo{};
        Device* d = any_device();
        qo.dev_id = any_id();
        qo.queue_id =
            static_cast<uint16_t>(d && r_.chance(80) ? r_.below(d->cfg.nr_queues + 1) : r_.value());
        if (d && r_.chance(80))
            qo.dev_id = d->cfg.dev_id;
        if (r_.chance(10))
            qo.flags = static_cast<uint16_t>(r_.value());
        if (r_.chance(10))
            qo.reserved = r_.value();
        unsigned long arg = reinterpret_cast<unsigned long>(&qo);
        char* p = nullptr;
        if (r_.chance(10)) {
            p = static_cast<char*>(mem_.pointer(r_).first);
            arg = reinterpret_cast<unsigned long>(p);
            if (p == mem_.big)
                std::memcpy(p, &qo, sizeof(qo));
        }
        long r = x_ioctl(ctl_.fd, USERBLK_IOC_OPEN_QUEUE, arg);
        note("OPEN_QUEUE dev %u q %u flags %u ptr %p -> %ld", qo.dev_id, qo.queue_id, qo.flags,
             static_cast<void*>(p), r);
        if (r < 0)
            return;
        if (p) { // what the kernel read: our buffer, whatever was in it
            if (p < mem_.big || p >= mem_.big + mem_.big_len) {
                x_close(static_cast<int>(r));
                return;
            }
            std::memcpy(&qo, p, sizeof(qo));
        }
        auto it = devices_.find(qo.dev_id);
        if (it == devices_.end() || qo.queue_id >= it->second.queues.size()) {
            std::fprintf(stderr, "FAIL: OPEN_QUEUE of dev %u queue %u succeeded (seed %llu)\n",
                         qo.dev_id, qo.queue_id, static_cast<unsigned long long>(g_seed));
            failed_ = true;
            x_close(static_cast<int>(r));
            return;
        }
        auto q = std::make_unique<Queue>();
        q->dev_id = qo.dev_id;
        q->id = qo.queue_id;
        q->cfg = it->second.cfg;
        q->fd = Fd(static_cast<int>(r));
        ::fcntl(q->fd.fd, F_SETFL, O_NONBLOCK);
        auto& slot = it->second.queues[qo.queue_id];
        if (slot) // the kernel let a queue be opened twice: keep the old one to fuzz
            zombies_.push_back(std::move(slot));
        slot = std::move(q);
    }

    // What a queue needs to serve: the ring mapped, a pipe per tag, a data fd.
    void prepare_queue() {
        Queue* q = any_queue(false);
        if (q)
            prepare(*q);
    }
    void prepare(Queue& queue) {
        Queue* q = &queue;
        if (q->cfg.mode == USERBLK_MODE_RING && !q->ring.addr) {
            userblk_ring_layout l{};
            long r =
                x_ioctl(q->fd.fd, USERBLK_IOC_RING_LAYOUT, reinterpret_cast<unsigned long>(&l));
            note("RING_LAYOUT dev %u q %u -> %ld (map %llu)", q->dev_id, q->id, r,
                 static_cast<unsigned long long>(l.map_size));
            if (r != 0 || !l.map_size || l.map_size > (512ull << 20))
                return;
            if (l.rw_off == 0 || l.rw_off >= l.map_size)
                return;
            // The two parts side by side: read-only, then read-write (the uapi's way).
            void* p = ::mmap(nullptr, l.map_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                return;
            Mapping area(p, l.map_size);
            char* b = static_cast<char*>(p);
            bool ok =
                ::mmap(b, l.rw_off, PROT_READ, MAP_SHARED | MAP_FIXED, q->fd.fd, 0) != MAP_FAILED &&
                ::mmap(b + l.rw_off, l.map_size - l.rw_off, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_FIXED, q->fd.fd,
                       static_cast<off_t>(l.rw_off)) != MAP_FAILED;
            note("mmap ring dev %u q %u len %llu -> %s", q->dev_id, q->id,
                 static_cast<unsigned long long>(l.map_size), ok ? "ok" : std::strerror(errno));
            if (!ok)
                return;
            q->ring = std::move(area);
            q->layout = l;
            auto* didx = reinterpret_cast<userblk_ring_daemon_indices*>(b + l.daemon_off);
            q->sq_head = __atomic_load_n(&didx->sq_head, __ATOMIC_ACQUIRE);
            q->cq_tail = __atomic_load_n(&didx->cq_tail, __ATOMIC_ACQUIRE);
        } else if (q->cfg.mode == USERBLK_MODE_PIPE) {
            uint32_t depth = std::min<uint32_t>(q->cfg.queue_depth, 64);
            uint32_t from = static_cast<uint32_t>(q->pipes.size());
            for (uint32_t tag = from; tag < depth; tag++) {
                int fds[2];
                if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
                    return;
                q->pipes.emplace_back(Fd(fds[0]), Fd(fds[1]));
                if (r_.chance(95))
                    ::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(q->cfg.max_io_bytes));
                userblk_pipe_set ps{};
                ps.tag = tag;
                ps.read_fd = fds[0];
                ps.write_fd = fds[1];
                long r =
                    x_ioctl(q->fd.fd, USERBLK_IOC_PIPE_SET, reinterpret_cast<unsigned long>(&ps));
                if (r != 0)
                    note("PIPE_SET dev %u q %u tag %u -> %ld", q->dev_id, q->id, tag, r);
            }
            note("PIPE_SET dev %u q %u tags %u..%u", q->dev_id, q->id, from, depth);
        } else if (q->cfg.mode == USERBLK_MODE_SPLICE && q->data_fds.size() < 3) {
            long r = x_ioctl(q->fd.fd, USERBLK_IOC_SPLICE_DATA_FD, 0);
            note("SPLICE_DATA_FD dev %u q %u -> %ld", q->dev_id, q->id, r);
            if (r >= 0)
                q->data_fds.emplace_back(static_cast<int>(r));
        }
    }

    void start() {
        Device* d = any_device();
        uint32_t id = d && r_.chance(85) ? d->cfg.dev_id : any_id();
        long r = x_ioctl(ctl_.fd, USERBLK_IOC_START_DEV, id);
        note("START_DEV %u -> %ld", id, r);
        if (r == 0) {
            auto it = devices_.find(id);
            if (it == devices_.end()) {
                std::fprintf(stderr, "FAIL: START_DEV of unknown device %u succeeded\n", id);
                failed_ = true;
                return;
            }
            it->second.started = true;
            started_++;
            publish_disks();
        }
    }

    void stop() {
        uint32_t id = any_id();
        long r = x_ioctl(ctl_.fd, USERBLK_IOC_STOP_DEV, id);
        note("STOP_DEV %u -> %ld", id, r);
        if (r == 0)
            publish_disks();
    }

    void del() {
        uint32_t id = any_id();
        long r = x_ioctl(ctl_.fd, USERBLK_IOC_DEL_DEV, id);
        note("DEL_DEV %u -> %ld", id, r);
        auto it = devices_.find(id);
        if (r == 0 && it != devices_.end()) {
            // Its queue fds stay open a while: the fuzzer keeps throwing things at dead queues.
            for (auto& q : it->second.queues)
                if (q)
                    zombies_.push_back(std::move(q));
            devices_.erase(it);
            publish_disks();
        }
        while (zombies_.size() > 8)
            zombies_.erase(zombies_.begin());
    }

    void close_queue() {
        Device* d = any_device();
        if (d && r_.chance(70)) {
            for (auto& q : d->queues)
                if (q && r_.chance(50)) {
                    note("close queue dev %u q %u (%s)", q->dev_id, q->id,
                         q->ring.addr ? "mapped" : "unmapped");
                    if (r_.chance(50)) { // the mapping first or the fd first
                        q->ring.reset();
                    }
                    q.reset();
                    break;
                }
        } else if (!zombies_.empty()) {
            note("close a dead queue");
            zombies_.erase(zombies_.begin() + static_cast<long>(r_.below(zombies_.size())));
        }
    }

    void get_info() {
        userblk_dev_config info{};
        info.abi_version = r_.chance(90) ? USERBLK_ABI_VERSION : static_cast<uint32_t>(r_.value());
        info.dev_id = any_id();
        unsigned long arg = reinterpret_cast<unsigned long>(&info);
        if (r_.chance(20))
            arg = reinterpret_cast<unsigned long>(mem_.pointer(r_).first);
        long r = x_ioctl(ctl_.fd, USERBLK_IOC_GET_INFO, arg);
        note("GET_INFO %u -> %ld", info.dev_id, r);
    }

    // The disks the I/O threads may use: started, live and fast to time out.
    void publish_disks() {
        std::vector<std::string> disks;
        for (auto& [id, d] : devices_)
            if (d.started && d.cfg.timeout_ms <= kMaxIoTimeoutMs && d.cfg.timeout_ms != 0)
                disks.push_back("/dev/" USERBLK_DISK_PREFIX + std::to_string(id));
        std::lock_guard lock(g_disks_mutex);
        g_disks = std::move(disks);
    }

    // -- the fake daemon ----------------------------------------------------------------

    // How to answer one request: right, wrong in a random way, or not at all.
    enum class Answer { Right, Garbage, None };
    Answer how() {
        uint64_t x = r_.below(100);
        return x < 75 ? Answer::Right : x < 93 ? Answer::Garbage : Answer::None;
    }
    userblk_io_cpl garbage_cpl(const userblk_io_desc& d) {
        userblk_io_cpl c{};
        c.tag = d.tag;
        c.gen = d.gen;
        switch (r_.below(6)) {
        case 0:
            c.tag = static_cast<uint16_t>(r_.value());
            break;
        case 1:
            c.gen = static_cast<uint32_t>(r_.value());
            break;
        case 2:
            c.result = static_cast<int32_t>(r_.value());
            break;
        case 3:
            c.reserved0 = static_cast<uint16_t>(r_.value() | 1);
            break;
        case 4:
            c.reserved1 = static_cast<uint32_t>(r_.value() | 1);
            break;
        default:
            c.result = -static_cast<int32_t>(r_.below(140));
            break;
        }
        return c;
    }

    void serve() {
        Queue* q = any_queue(r_.chance(5));
        if (!q)
            return;
        for (int round = 0; round < 4; round++) {
            if (q->cfg.mode != USERBLK_MODE_RING || q->ring.addr) { // give the I/O a moment
                pollfd p{q->fd.fd, POLLIN, 0};
                InCall c(g_main_slot, "poll of a queue");
                ::syscall(SYS_poll, &p, 1, static_cast<int>(r_.below(4)));
            }
            switch (q->cfg.mode) {
            case USERBLK_MODE_COPY:
                serve_copy(*q);
                break;
            case USERBLK_MODE_RING:
                serve_ring(*q);
                break;
            default:
                serve_desc(*q);
                break;
            }
        }
    }

    void serve_copy(Queue& q) {
        char* buf = mem_.big;
        size_t want = USERBLK_COPY_MIN_READ(q.cfg.max_io_bytes);
        if (want > mem_.big_len / 2)
            return;
        long n = x_read(q.fd.fd, buf, want);
        if (n <= 0)
            return;
        std::vector<char> out;
        size_t pos = 0;
        while (pos + sizeof(userblk_io_desc) <= static_cast<size_t>(n)) {
            userblk_io_desc d;
            std::memcpy(&d, buf + pos, sizeof(d));
            pos += sizeof(d);
            if (d.op == USERBLK_OP_WRITE)
                pos += d.len;
            Answer a = how();
            if (a == Answer::None)
                continue;
            userblk_io_cpl c{d.tag, 0, d.gen, 0, 0};
            size_t data = d.op == USERBLK_OP_READ ? d.len : 0;
            if (a == Answer::Garbage) {
                c = garbage_cpl(d);
                if (r_.chance(30))
                    data = r_.below(d.len + 4096);
            }
            if (data > q.cfg.max_io_bytes + 8192)
                data = 0;
            size_t at = out.size();
            out.resize(at + sizeof(c) + data, static_cast<char>(0xa5));
            std::memcpy(out.data() + at, &c, sizeof(c));
            answered_++;
        }
        if (out.empty())
            return;
        long w;
        if (r_.chance(10)) { // a batch cut short, or its tail on a bad pointer
            size_t cut = r_.below(out.size());
            w = x_write(q.fd.fd, out.data(), cut);
        } else {
            w = x_write(q.fd.fd, out.data(), out.size());
        }
        note("serve copy dev %u q %u: read %ld, wrote %zu -> %ld", q.dev_id, q.id, n, out.size(),
             w);
    }

    // pipe and splice: descriptors on the queue fd, data on the side.
    void serve_desc(Queue& q) {
        std::array<userblk_io_desc, 16> ds;
        long n = x_read(q.fd.fd, ds.data(), sizeof(userblk_io_desc) * (1 + r_.below(ds.size())));
        if (n <= 0)
            return;
        std::vector<userblk_io_cpl> out;
        for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(userblk_io_desc); i++) {
            const userblk_io_desc& d = ds[i];
            if (d.tag < USERBLK_MAX_DEPTH) {
                if (q.gens.size() <= d.tag)
                    q.gens.resize(d.tag + 1);
                q.gens[d.tag] = d.gen;
            }
            Answer a = how();
            size_t len = std::min<size_t>(d.len, mem_.big_len);
            if (q.cfg.mode == USERBLK_MODE_PIPE) {
                if (d.tag < q.pipes.size()) {
                    auto& [rd, wr] = q.pipes[d.tag];
                    if (d.op == USERBLK_OP_WRITE) // take the data out of the tag's pipe
                        while (x_read(rd.fd, mem_.big, mem_.big_len) > 0) {
                        }
                    else if (d.op == USERBLK_OP_READ && a != Answer::None)
                        x_write(wr.fd, mem_.big, a == Answer::Right ? len : r_.below(len + 1));
                }
            } else if (!q.data_fds.empty()) {
                int dfd = q.data_fds[r_.below(q.data_fds.size())].fd;
                uint64_t off = USERBLK_SPLICE_OFF(d.tag, d.gen, 0);
                if (a == Answer::Garbage && r_.chance(30))
                    off = USERBLK_SPLICE_OFF(d.tag, d.gen - 1, 0); // the tag's last request
                if (a == Answer::Garbage && r_.chance(50))
                    off += r_.value() % 8192;
                if (d.op == USERBLK_OP_WRITE)
                    x_pread(dfd, mem_.big, len, off);
                else if (d.op == USERBLK_OP_READ && a != Answer::None)
                    x_pwrite(dfd, mem_.big, a == Answer::Right ? len : r_.below(len + 1), off);
            }
            if (a == Answer::None)
                continue;
            out.push_back(a == Answer::Right ? userblk_io_cpl{d.tag, 0, d.gen, 0, 0}
                                             : garbage_cpl(d));
            answered_++;
        }
        long w = out.empty() ? 0 : x_write(q.fd.fd, out.data(), out.size() * sizeof(out[0]));
        note("serve mode %u dev %u q %u: read %ld, answered %zu -> %ld", q.cfg.mode, q.dev_id, q.id,
             n, out.size(), w);
    }

    void serve_ring(Queue& q) {
        if (!q.ring.addr) {
            prepare(q);
            return;
        }
        char* base = static_cast<char*>(q.ring.addr);
        const userblk_ring_layout& l = q.layout;
        auto* kidx = reinterpret_cast<userblk_ring_kernel_indices*>(base + l.kernel_off);
        auto* idx = reinterpret_cast<userblk_ring_daemon_indices*>(base + l.daemon_off);
        auto* sq = reinterpret_cast<userblk_io_desc*>(base + l.sq_off);
        auto* cq = reinterpret_cast<userblk_io_cpl*>(base + l.cq_off);
        uint32_t tail = __atomic_load_n(&kidx->sq_tail, __ATOMIC_ACQUIRE);
        unsigned got = 0, answered = 0;
        while (q.sq_head != tail && got < l.sq_entries) {
            userblk_io_desc d = sq[q.sq_head & (l.sq_entries - 1)];
            q.sq_head++;
            got++;
            Answer a = how();
            if (a == Answer::None)
                continue;
            if (d.op == USERBLK_OP_READ && d.tag < l.nr_bufs && d.len <= l.buf_size)
                std::memset(base + l.buf_off + static_cast<size_t>(d.tag) * l.buf_size, 0x3c,
                            d.len);
            cq[q.cq_tail & (l.cq_entries - 1)] =
                a == Answer::Right ? userblk_io_cpl{d.tag, 0, d.gen, 0, 0} : garbage_cpl(d);
            q.cq_tail++;
            answered++;
        }
        __atomic_store_n(&idx->sq_head, q.sq_head, __ATOMIC_RELEASE);
        __atomic_store_n(&idx->cq_tail, q.cq_tail, __ATOMIC_RELEASE);
        answered_ += answered;
        long r =
            x_ioctl(q.fd.fd, USERBLK_IOC_RING_ENTER, r_.chance(5) ? USERBLK_RING_ENTER_WAIT : 0);
        if (got || r != 0)
            note("serve ring dev %u q %u: took %u, answered %u, ENTER -> %ld", q.dev_id, q.id, got,
                 answered, r);
    }

    // Lie in the shared indices and entries, then let the kernel look.
    void ring_scribble() {
        Queue* q = any_queue(false);
        if (!q || !q->ring.addr)
            return;
        char* base = static_cast<char*>(q->ring.addr);
        auto* kidx = reinterpret_cast<userblk_ring_kernel_indices*>(base + q->layout.kernel_off);
        auto* idx = reinterpret_cast<userblk_ring_daemon_indices*>(base + q->layout.daemon_off);
        uint32_t v = static_cast<uint32_t>(r_.value());
        const char* what;
        switch (r_.below(5)) {
        case 0:
            what = "sq_head";
            idx->sq_head = v;
            break;
        case 1:
            what = "cq_tail";
            idx->cq_tail = v;
            break;
        case 2:
        case 3: {
            // The kernel's indices are read-only, and must stay so: no mprotect makes them
            // writable (the mapping lost VM_MAYWRITE), and a write through them faults.
            what = "the kernel's indices";
            if (::mprotect(base, q->layout.rw_off, PROT_READ | PROT_WRITE) == 0) {
                note("ring dev %u q %u: mprotect made the kernel's indices writable", q->dev_id,
                     q->id);
                failed_ = true;
                ::mprotect(base, q->layout.rw_off, PROT_READ);
            }
            if (probe(&kidx->sq_tail, sizeof(uint32_t), true) != SIGSEGV) {
                note("ring dev %u q %u: a write to the kernel's sq_tail did not fault", q->dev_id,
                     q->id);
                failed_ = true;
            }
            break;
        }
        default: {
            what = "a completion entry";
            auto* cq = reinterpret_cast<uint32_t*>(base + q->layout.cq_off);
            cq[r_.below(q->layout.cq_entries * sizeof(userblk_io_cpl) / 4)] = v;
            break;
        }
        }
        long r = x_ioctl(q->fd.fd, USERBLK_IOC_RING_ENTER, 0);
        note("ring scribble dev %u q %u: %s = %u, ENTER -> %ld", q->dev_id, q->id, what, v, r);
        if (r_.chance(50)) { // and the truth again
            q->sq_head = __atomic_load_n(&kidx->sq_tail, __ATOMIC_ACQUIRE);
            idx->sq_head = q->sq_head;
            q->cq_tail = __atomic_load_n(&kidx->cq_head, __ATOMIC_ACQUIRE);
            idx->cq_tail = q->cq_tail;
        }
    }

    // -- bad input ------------------------------------------------------------------------

    // An ioctl number: ours with wrong sizes and directions, unknown ones, another magic.
    unsigned long any_cmd() {
        static const unsigned long ours[] = {
            USERBLK_IOC_ADD_DEV,        USERBLK_IOC_START_DEV,  USERBLK_IOC_STOP_DEV,
            USERBLK_IOC_DEL_DEV,        USERBLK_IOC_GET_INFO,   USERBLK_IOC_OPEN_QUEUE,
            USERBLK_IOC_RING_LAYOUT,    USERBLK_IOC_RING_ENTER, USERBLK_IOC_PIPE_SET,
            USERBLK_IOC_SPLICE_DATA_FD,
        };
        unsigned long cmd = ours[r_.below(std::size(ours))];
        switch (r_.below(6)) {
        case 0: // the right number, a wrong size
            return (cmd & ~(static_cast<unsigned long>(_IOC_SIZEMASK) << _IOC_SIZESHIFT)) |
                   ((r_.value() & _IOC_SIZEMASK) << _IOC_SIZESHIFT);
        case 1: // a wrong direction
            return (cmd & ~(static_cast<unsigned long>(_IOC_DIRMASK) << _IOC_DIRSHIFT)) |
                   (r_.below(4) << _IOC_DIRSHIFT);
        case 2: // an unknown number of our magic
            return _IOC(r_.below(4), USERBLK_IOC_MAGIC, r_.below(256), r_.below(512));
        case 3:
            return static_cast<unsigned long>(r_.value());
        default:
            return cmd;
        }
    }
    unsigned long any_arg() {
        if (r_.chance(40))
            return reinterpret_cast<unsigned long>(mem_.pointer(r_).first);
        if (r_.chance(30)) { // a good buffer of random bytes
            for (size_t i = 0; i < 256; i += 8) {
                uint64_t v = r_.value();
                std::memcpy(mem_.big + i, &v, 8);
            }
            return reinterpret_cast<unsigned long>(mem_.big);
        }
        return static_cast<unsigned long>(r_.value());
    }

    void control_ioctl() {
        unsigned long cmd = any_cmd();
        if (cmd == USERBLK_IOC_ADD_DEV || cmd == USERBLK_IOC_START_DEV ||
            cmd == USERBLK_IOC_OPEN_QUEUE)
            return; // made by their own actions, with the bookkeeping they need
        unsigned long arg = any_arg();
        long r = x_ioctl(ctl_.fd, cmd, arg);
        note("control ioctl %#lx arg %#lx -> %ld", cmd, arg, r);
        if ((cmd == USERBLK_IOC_DEL_DEV || cmd == USERBLK_IOC_STOP_DEV) && r == 0) {
            auto it = devices_.find(static_cast<uint32_t>(arg));
            if (cmd == USERBLK_IOC_DEL_DEV && it != devices_.end()) {
                for (auto& q : it->second.queues)
                    if (q)
                        zombies_.push_back(std::move(q));
                devices_.erase(it);
            }
            publish_disks();
        }
    }

    void queue_ioctl() {
        int fd = any_queue_or_data_fd();
        unsigned long cmd = any_cmd();
        unsigned long arg = any_arg();
        if (cmd == USERBLK_IOC_RING_ENTER && r_.chance(70))
            arg = r_.below(4);
        long r = x_ioctl(fd, cmd, arg);
        note("queue ioctl fd %d %#lx arg %#lx -> %ld", fd, cmd, arg, r);
        if (r >= 0 && (cmd == USERBLK_IOC_SPLICE_DATA_FD || cmd == USERBLK_IOC_OPEN_QUEUE))
            x_close(static_cast<int>(r)); // a new fd nobody keeps
    }

    void queue_read() {
        int fd = r_.chance(90) ? any_queue_or_data_fd() : any_fd();
        auto [p, what] = mem_.pointer(r_);
        size_t len = mem_.length(r_);
        if (p == mem_.big)
            len = std::min(len, mem_.big_len);
        long r;
        if (r_.chance(50)) {
            r = x_read(fd, p, len);
        } else {
            uint64_t off = r_.value();
            r = x_pread(fd, p, len, off);
        }
        note("read fd %d ptr %s len %zu -> %ld", fd, what, len, r);
        if (r > 0)
            lost_ += 1; // requests taken and not answered: they time out
    }

    void queue_write() {
        int fd = r_.chance(90) ? any_queue_or_data_fd() : any_fd();
        auto [p, what] = mem_.pointer(r_);
        size_t len = mem_.length(r_);
        if (p == mem_.big) {
            len = std::min(len, mem_.big_len);
            // Plausible completions: real tags and gens of nothing, or random bytes.
            for (size_t i = 0; i + sizeof(userblk_io_cpl) <= std::min<size_t>(len, 4096);
                 i += sizeof(userblk_io_cpl)) {
                userblk_io_cpl c{static_cast<uint16_t>(r_.below(8)), 0,
                                 static_cast<uint32_t>(r_.below(4)),
                                 r_.chance(80) ? 0 : static_cast<int32_t>(r_.value()), 0};
                std::memcpy(mem_.big + i, &c, sizeof(c));
            }
        }
        long r = r_.chance(50) ? x_write(fd, p, len) : x_pwrite(fd, p, len, r_.value());
        note("write fd %d ptr %s len %zu -> %ld", fd, what, len, r);
    }

    void queue_mmap() {
        int fd = r_.chance(85) ? any_queue_or_data_fd() : any_fd();
        size_t page = mem_.page;
        size_t len = r_.chance(60) ? page * (1 + r_.below(1024)) : static_cast<size_t>(r_.value());
        Queue* q = any_queue();
        if (q && q->layout.map_size && r_.chance(40))
            len = q->layout.map_size + (r_.below(3) - 1) * page;
        uint64_t off = r_.chance(60) ? page * r_.below(4) : r_.value();
        int prot = static_cast<int>(r_.below(8));
        int flags = r_.chance(80)   ? MAP_SHARED
                    : r_.chance(50) ? MAP_PRIVATE
                                    : static_cast<int>(r_.value());
        flags &= ~(MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_HUGETLB); // never over our own memory
        void* p;
        {
            InCall c(g_main_slot, "mmap");
            p = reinterpret_cast<void*>(::syscall(SYS_mmap, nullptr, len, prot, flags, fd, off));
        }
        long r = reinterpret_cast<long>(p);
        if (r < 0 && r > -4096)
            note("mmap fd %d len %zu off %#llx prot %d flags %#x -> %ld", fd, len,
                 static_cast<unsigned long long>(off), prot, flags, r);
        else if (p == MAP_FAILED)
            note("mmap fd %d len %zu off %#llx prot %d flags %#x -> %s", fd, len,
                 static_cast<unsigned long long>(off), prot, flags, std::strerror(errno));
        else {
            int sig = (prot & PROT_READ) && len ? probe(p, std::min<size_t>(len, 64 * page),
                                                        (prot & PROT_WRITE) && r_.chance(20))
                                                : 0;
            if (r_.chance(30) && len > page) // a partial unmap, then the rest
                ::munmap(static_cast<char*>(p) + page, page);
            if (r_.chance(20))
                ::mprotect(p, page, static_cast<int>(r_.below(8)));
            ::munmap(p, len);
            note("mmap fd %d len %zu off %#llx prot %d flags %#x -> ok, probe %d", fd, len,
                 static_cast<unsigned long long>(off), prot, flags, sig);
        }
    }

    // pread/pwrite on data fds at offsets that name requests, their ends and nothing.
    void data_fd_io() {
        Queue* q = any_queue();
        if (!q || q->data_fds.empty())
            return queue_read();
        int fd = q->data_fds[r_.below(q->data_fds.size())].fd;
        uint64_t tag = r_.chance(80) ? r_.below(q->cfg.queue_depth + 2) : r_.value();
        uint64_t pos = r_.chance(50) ? r_.below(q->cfg.max_io_bytes + 2) : r_.value();
        uint64_t gen = r_.chance(70) ? q->gen_of(tag) - r_.below(2) : r_.value();
        uint64_t off = r_.chance(85) ? USERBLK_SPLICE_OFF(tag, gen, pos) : r_.value();
        auto [p, what] =
            r_.chance(70) ? std::pair<void*, const char*>{mem_.big, "good"} : mem_.pointer(r_);
        size_t len = r_.chance(70) ? r_.below(q->cfg.max_io_bytes + 4096) : mem_.length(r_);
        if (p == mem_.big)
            len = std::min(len, mem_.big_len);
        long r = r_.chance(50) ? x_pread(fd, p, len, off) : x_pwrite(fd, p, len, off);
        note("data fd %d off %#llx ptr %s len %zu -> %ld", fd, static_cast<unsigned long long>(off),
             what, len, r);
    }

    // splice and vmsplice between pipes and the queue and data fds.
    void splice_io() {
        int pfd[2];
        if (::pipe2(pfd, O_CLOEXEC | O_NONBLOCK) != 0)
            return;
        Fd rd(pfd[0]), wr(pfd[1]);
        if (r_.chance(50))
            ::fcntl(wr.fd, F_SETPIPE_SZ, 1 << 20);
        int fd = r_.chance(90) ? any_queue_or_data_fd() : any_fd();
        Queue* q = any_queue();
        uint64_t tag = q ? r_.below(q->cfg.queue_depth + 1) : 0;
        uint64_t off =
            q && r_.chance(70)
                ? USERBLK_SPLICE_OFF(tag, q->gen_of(tag),
                                     r_.chance(70) ? 0 : r_.below(q->cfg.max_io_bytes + 2))
                : r_.value();
        loff_t o = static_cast<loff_t>(off);
        size_t len = r_.chance(70) ? r_.below(1 << 20) + 1 : static_cast<size_t>(r_.value());
        unsigned flags = r_.chance(70) ? SPLICE_F_NONBLOCK : static_cast<unsigned>(r_.value());
        flags |= SPLICE_F_NONBLOCK; // our pipe would otherwise wait for a reader we never run
        long r;
        const char* what;
        switch (r_.below(4)) {
        case 0: {
            what = "fd -> pipe";
            InCall c(g_main_slot, "splice");
            r = sys(::syscall(SYS_splice, fd, r_.chance(80) ? &o : nullptr, wr.fd, nullptr, len,
                              flags));
            break;
        }
        case 1: {
            what = "pipe -> fd";
            ::write(wr.fd, mem_.big, std::min<size_t>(len, 65536));
            InCall c(g_main_slot, "splice");
            r = sys(::syscall(SYS_splice, rd.fd, nullptr, fd, r_.chance(80) ? &o : nullptr, len,
                              flags));
            break;
        }
        case 2: {
            what = "vmsplice bad iovec -> pipe -> fd";
            iovec iov[2];
            auto [p, pw] = mem_.pointer(r_);
            iov[0] = {p, std::min<size_t>(mem_.length(r_), 1 << 20)};
            iov[1] = {mem_.big, r_.below(65536)};
            {
                InCall c(g_main_slot, "vmsplice");
                ::syscall(SYS_vmsplice, wr.fd, iov, 1 + r_.below(2),
                          SPLICE_F_NONBLOCK | (r_.chance(30) ? SPLICE_F_GIFT : 0));
            }
            InCall c(g_main_slot, "splice");
            r = sys(::syscall(SYS_splice, rd.fd, nullptr, fd, r_.chance(80) ? &o : nullptr, len,
                              flags));
            break;
        }
        default: {
            what = "sendfile fd -> /dev/null";
            InCall c(g_main_slot, "sendfile");
            r = sys(::syscall(SYS_sendfile, null_.fd, fd, r_.chance(80) ? &o : nullptr, len));
            break;
        }
        }
        note("splice %s fd %d off %#llx len %zu flags %#x -> %ld", what, fd,
             static_cast<unsigned long long>(off), len, flags, r);
    }

    void poll_fds() {
        std::array<pollfd, 6> p{};
        size_t n = 1 + r_.below(p.size());
        for (size_t i = 0; i < n; i++)
            p[i] = {r_.chance(80) ? any_queue_or_data_fd() : any_fd(),
                    static_cast<short>(r_.chance(70) ? POLLIN | POLLOUT : r_.value()), 0};
        int timeout = r_.chance(80) ? 0 : static_cast<int>(r_.below(20));
        InCall c(g_main_slot, "poll");
        long r = sys(::syscall(SYS_poll, p.data(), n, timeout));
        note("poll %zu fds timeout %d -> %ld", n, timeout, r);
    }

    void pipe_set() {
        Queue* q = any_queue();
        if (!q)
            return;
        userblk_pipe_set ps{};
        ps.tag =
            static_cast<uint32_t>(r_.chance(70) ? r_.below(q->cfg.queue_depth + 1) : r_.value());
        int fds[2] = {-1, -1};
        Fd a, b;
        switch (r_.below(4)) {
        case 0: // a fresh pipe, maybe too small, maybe reversed
            if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
                a = Fd(fds[0]);
                b = Fd(fds[1]);
                ps.read_fd = r_.chance(80) ? fds[0] : fds[1];
                ps.write_fd = r_.chance(80) ? fds[1] : fds[0];
            }
            break;
        case 1: { // ends of two different pipes
            int other[2];
            if (::pipe2(fds, O_CLOEXEC) == 0 && ::pipe2(other, O_CLOEXEC) == 0) {
                a = Fd(fds[0]);
                b = Fd(other[1]);
                ::close(fds[1]);
                ::close(other[0]);
                ps.read_fd = fds[0];
                ps.write_fd = other[1];
            }
            break;
        }
        default:
            ps.read_fd = any_fd();
            ps.write_fd = r_.chance(50) ? ps.read_fd : any_fd();
            break;
        }
        if (r_.chance(10))
            ps.flags = static_cast<uint32_t>(r_.value());
        if (r_.chance(10))
            ps.reserved = r_.value();
        unsigned long arg = reinterpret_cast<unsigned long>(&ps);
        if (r_.chance(10))
            arg = reinterpret_cast<unsigned long>(mem_.pointer(r_).first);
        long r = x_ioctl(q->fd.fd, USERBLK_IOC_PIPE_SET, arg);
        note("PIPE_SET dev %u q %u tag %u fds %d,%d -> %ld", q->dev_id, q->id, ps.tag, ps.read_fd,
             ps.write_fd, r);
        if (r == 0 && fds[0] >= 0 && ps.tag < q->pipes.size() && ps.read_fd == fds[0] &&
            ps.write_fd == fds[1])
            q->pipes[ps.tag] = {std::move(a), std::move(b)}; // the daemon's view follows
    }

    void control_rw() {
        auto [p, what] = mem_.pointer(r_);
        size_t len = mem_.length(r_);
        if (p == mem_.big)
            len = std::min(len, mem_.big_len);
        long r = r_.chance(50) ? x_read(ctl_.fd, p, len) : x_write(ctl_.fd, p, len);
        note("control read/write ptr %s len %zu -> %ld", what, len, r);
    }

    uint32_t mode_;
    Rng r_;
    Memory mem_;
    Fd ctl_, null_;
    std::map<uint32_t, Device> devices_;
    std::vector<std::unique_ptr<Queue>> zombies_; // queues of deleted devices, still open
    size_t added_ = 0, started_ = 0, answered_ = 0, lost_ = 0;
    uint32_t last_added_ = 0;

public:
    bool failed_ = false;
};

// -- the I/O threads ------------------------------------------------------------------------

std::atomic<uint64_t> g_ios{0}, g_io_errors{0};

void io_thread(int index, uint64_t seed) {
    Slot& slot = g_io_slots[index];
    std::mt19937_64 g(seed);
    void* buf = nullptr;
    if (::posix_memalign(&buf, 4096, 1u << 20) != 0)
        return;
    std::memset(buf, 0x42, 1u << 20);
    while (!g_stop.load()) {
        std::string path;
        {
            std::lock_guard lock(g_disks_mutex);
            if (!g_disks.empty())
                path = g_disks[g() % g_disks.size()];
        }
        if (path.empty()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            continue;
        }
        int fd;
        {
            InCall c(slot, "open of a disk");
            fd = ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
        }
        if (fd < 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            continue;
        }
        for (int i = 0; i < 8 && !g_stop.load(); i++) {
            size_t len = (g() % 8 == 0) ? 512 * (1 + g() % 2048) : 4096u << (g() % 5);
            len = std::min<size_t>(len, 1u << 20);
            uint64_t off = (g() % 4 == 0) ? (g() % (128ull << 20)) : 4096 * (g() % 4096);
            if (g() % 16 == 0)
                off = (g() % 8) * 4096 + 100; // misaligned: EINVAL
            long r;
            InCall c(slot, "O_DIRECT I/O");
            switch (g() % 4) {
            case 0:
                r = sys(::pwrite(fd, buf, len, static_cast<off_t>(off)));
                break;
            case 1:
                r = sys(::fdatasync(fd));
                break;
            default:
                r = sys(::pread(fd, buf, len, static_cast<off_t>(off)));
                break;
            }
            g_ios++;
            if (r < 0)
                g_io_errors++;
        }
        InCall c(slot, "close of a disk");
        ::close(fd);
    }
    std::free(buf);
}

void usage(FILE* f) {
    std::fprintf(f,
                 "usage: userblk_fuzz --transport NAME [--seed S] "
                 "[--iterations N] [--seconds S] [--trace]\n"
                 "Random and boundary values at every ioctl of userblk.ko and at its queue and "
                 "data fds,\nwith devices coming and going and O_DIRECT I/O in flight. Needs "
                 "root and userblk.ko loaded.\n"
                 "  --seed S        the generator's seed (default: from the clock; printed)\n"
                 "  --iterations N  actions to run (default 2000)\n"
                 "  --seconds S     stop after S seconds even if iterations remain (default 50)\n"
                 "  --trace         print every action as it is done\n"
                 "Exit: 0 done, 1 a check failed, 2 usage, 3 a syscall hung, 77 skip.\n");
}

} // namespace

int main(int argc, char** argv) {
    std::string transport;
    uint64_t iterations = 2000;
    double seconds = 50;
    bool have_seed = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&](const char* name) -> std::string {
            std::string prefix = std::string(name) + "=";
            if (a.rfind(prefix, 0) == 0)
                return a.substr(prefix.size());
            if (a == name && i + 1 < argc)
                return argv[++i];
            return {};
        };
        if (a == "--help" || a == "-h") {
            usage(stdout);
            return 0;
        } else if (a == "--trace") {
            g_trace = true;
        } else if (a.rfind("--transport", 0) == 0) {
            transport = value("--transport");
        } else if (a.rfind("--seed", 0) == 0) {
            g_seed = std::strtoull(value("--seed").c_str(), nullptr, 0);
            have_seed = true;
        } else if (a.rfind("--iterations", 0) == 0) {
            iterations = std::strtoull(value("--iterations").c_str(), nullptr, 0);
        } else if (a.rfind("--seconds", 0) == 0) {
            seconds = std::strtod(value("--seconds").c_str(), nullptr);
        } else {
            std::fprintf(stderr, "userblk_fuzz: unknown argument %s\n", a.c_str());
            usage(stderr);
            return 2;
        }
    }
    uint32_t mode = mode_of(transport);
    if (mode == 0) {
        std::fprintf(stderr,
                     "userblk_fuzz: --transport %s is not a userblk.ko transport (userblk "
                     "--list-transports; kind=userblk in --dump-transport)\n",
                     transport.c_str());
        return 2;
    }
    if (!have_seed)
        g_seed = static_cast<uint64_t>(Clock::now().time_since_epoch().count()) & 0xffffffffffffull;
    if (::access(USERBLK_CONTROL_PATH, F_OK) != 0) {
        std::printf("SKIP: %s is missing (load userblk.ko first)\n", USERBLK_CONTROL_PATH);
        return 77;
    }
    std::printf("userblk_fuzz: transport %s seed %llu iterations %llu seconds %g\n",
                transport.c_str(), static_cast<unsigned long long>(g_seed),
                static_cast<unsigned long long>(iterations), seconds);
    std::fflush(stdout);

    struct sigaction sa {};
    sa.sa_handler = on_usr1; // no SA_RESTART: a sleep in the kernel returns EINTR
    sigaction(SIGUSR1, &sa, nullptr);
    g_main_thread = pthread_self();
    sa.sa_handler = nullptr;
    sa.sa_sigaction = probe_fault;
    sa.sa_flags = SA_NODEFER | SA_SIGINFO;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    // The last resort if the watchdog itself cannot run: the run's own bound plus a margin.
    ::alarm(static_cast<unsigned>(seconds) + 180);

    g_main_slot.thread = pthread_self();
    g_main_slot.hard_ms = kMainHardBoundMs;
    g_main_slot.interruptible = true;
    g_main_slot.name = "main";
    for (int i = 0; i < 2; i++) {
        g_io_slots[i].hard_ms = kIoHardBoundMs;
        g_io_slots[i].name = i ? "second I/O" : "first I/O";
    }
    Fuzzer f(mode, g_seed);
    if (f.open_control() != 0)
        return 1;
    std::thread dog(watchdog);
    // The I/O threads never see SIGUSR1: only the main thread's sleeps are interrupted.
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
    std::thread io0(io_thread, 0, g_seed ^ 0x1111), io1(io_thread, 1, g_seed ^ 0x2222);
    pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);

    auto t0 = Clock::now();
    uint64_t done = 0;
    for (; done < iterations; done++) {
        g_iteration = done;
        if (std::chrono::duration<double>(Clock::now() - t0).count() > seconds)
            break;
        f.step();
    }
    g_iteration = done;
    int bad = f.finish();
    // Every disk is gone: the I/O threads' requests have all failed or finished.
    g_stop = true;
    io0.join();
    io1.join();
    g_dog_stop = true;
    dog.join();
    double took = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("userblk_fuzz: %llu actions in %.1f s; %zu devices added, %zu started, %zu "
                "requests answered; %llu I/Os (%llu failed) in flight alongside\n",
                static_cast<unsigned long long>(done), took, f.devices_added(), f.devices_started(),
                f.requests_answered(), static_cast<unsigned long long>(g_ios.load()),
                static_cast<unsigned long long>(g_io_errors.load()));
    if (bad || f.failed_) {
        std::printf("FAIL: seed %llu (rerun: userblk_fuzz --transport %s --seed %llu "
                    "--iterations %llu --trace)\n",
                    static_cast<unsigned long long>(g_seed), transport.c_str(),
                    static_cast<unsigned long long>(g_seed), static_cast<unsigned long long>(done));
        dump_log();
        return 1;
    }
    return 0;
}
