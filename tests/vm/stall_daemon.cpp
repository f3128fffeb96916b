// userblk_stall_daemon: a fake daemon that serves one userblk.ko device until its first request
// and then stalls the kernel on purpose, for suite.py's test of what fio sees then.
//
//   userblk_stall_daemon --transport NAME [--timeout-ms N] [--how HOW]
//
// HOW (default by transport):
//   uffd       (copy, splice) the daemon's read() of descriptors (copy: a WRITE's data with
//              it) or its pread() of the data fd (splice) copies into memory whose pages wait
//              on a userfaultfd; pipe: the descriptors themselves;
//   pipe-lock  (pipe) a daemon thread holds every tag's pipe, splicing it into a socket that
//              does not drain;
//   none       (ring) the daemon takes requests and never answers.
// Prints "ID PATH" once the disk is up, then waits for the end of its standard input (or
// SIGTERM), lets the stalled calls go and exits, which closes the queue. Exit status: 0, 1 on
// a failed set-up (with the reason), 2 bad usage, 77 where the stall cannot be had (no
// userfaultfd, or a transport that is not userblk.ko's: the reason is printed).

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <uapi/userblk.h>

#include "stall.h"
#include "uapi_test_util.h"

namespace {

using namespace userblk_test;

int die(const char* what) {
    std::fprintf(stderr, "userblk_stall_daemon: %s: %s\n", what, std::strerror(errno));
    return 1;
}

void usage(FILE* f) {
    std::fprintf(f, "usage: userblk_stall_daemon --transport NAME (a userblk.ko transport) "
                    "[--timeout-ms N] [--how uffd|pipe-lock|none]\n");
}

} // namespace

int main(int argc, char** argv) {
    std::string transport, how;
    uint32_t timeout_ms = 2000;
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
        if (a == "--transport")
            transport = argv[++i];
        else if (a == "--how")
            how = argv[++i];
        else if (a == "--timeout-ms")
            timeout_ms = static_cast<uint32_t>(std::stoul(argv[++i]));
        else {
            usage(stderr);
            return 2;
        }
    }
    if (transport.empty()) {
        usage(stderr);
        return 2;
    }
    const uint32_t mode = mode_of(transport);
    if (mode == 0) {
        std::printf("SKIP: %s is not a userblk.ko transport\n", transport.c_str());
        return 77;
    }
    if (how.empty())
        how = mode == USERBLK_MODE_RING ? "none" : mode == USERBLK_MODE_PIPE ? "pipe-lock" : "uffd";
    if (how != "uffd" && how != "pipe-lock" && how != "none") {
        usage(stderr);
        return 2;
    }
    if (how == "pipe-lock" && mode != USERBLK_MODE_PIPE) {
        std::fprintf(stderr, "userblk_stall_daemon: --how pipe-lock needs --transport pipe\n");
        return 2;
    }
    if (how == "uffd" && mode == USERBLK_MODE_RING) {
        std::fprintf(stderr, "userblk_stall_daemon: ring copies no request data to user memory: "
                             "--how none\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    std::unique_ptr<StallingMemory> stalled;
    if (how == "uffd") {
        stalled = std::make_unique<StallingMemory>(size_t{4} << 20);
        if (!stalled->ok()) {
            std::printf("SKIP: %s\n", stalled->error().c_str());
            return 77;
        }
    }

    Fd ctl(::open(USERBLK_CONTROL_PATH, O_RDWR | O_CLOEXEC));
    if (ctl.get() < 0)
        return die(USERBLK_CONTROL_PATH);
    userblk_dev_config cfg = good_config(mode);
    cfg.timeout_ms = timeout_ms;
    if (int r = xioctl(ctl.get(), USERBLK_IOC_ADD_DEV, &cfg); r != 0) {
        errno = -r;
        return die("ADD_DEV");
    }
    userblk_queue_open qo{};
    qo.dev_id = cfg.dev_id;
    Fd q(xioctl(ctl.get(), USERBLK_IOC_OPEN_QUEUE, &qo));
    if (q.get() < 0) {
        errno = -q.get();
        return die("OPEN_QUEUE");
    }
    std::vector<std::pair<Fd, Fd>> pipes;
    std::vector<std::unique_ptr<PipeHolder>> holders;
    Fd data;
    char* ring = nullptr;
    userblk_ring_layout l{};
    if (mode == USERBLK_MODE_PIPE) {
        for (uint32_t tag = 0; tag < cfg.queue_depth; tag++) {
            int fds[2];
            if (::pipe2(fds, O_CLOEXEC) != 0)
                return die("pipe2");
            pipes.emplace_back(Fd(fds[0]), Fd(fds[1]));
            ::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(cfg.max_io_bytes));
            userblk_pipe_set ps{};
            ps.tag = tag;
            ps.read_fd = fds[0];
            ps.write_fd = fds[1];
            if (int r = xioctl(q.get(), USERBLK_IOC_PIPE_SET, &ps); r != 0) {
                errno = -r;
                return die("PIPE_SET");
            }
        }
    } else if (mode == USERBLK_MODE_SPLICE) {
        data = Fd(xioctl(q.get(), USERBLK_IOC_SPLICE_DATA_FD, 0ul));
        if (data.get() < 0) {
            errno = -data.get();
            return die("SPLICE_DATA_FD");
        }
    } else if (mode == USERBLK_MODE_RING) {
        if (int r = xioctl(q.get(), USERBLK_IOC_RING_LAYOUT, &l); r != 0) {
            errno = -r;
            return die("RING_LAYOUT");
        }
        ring = map_ring_area(q.get(), l);
        if (ring == nullptr)
            return die("mmap of the ring");
    }
    if (int r = xioctl(ctl.get(), USERBLK_IOC_START_DEV, (unsigned long)cfg.dev_id); r != 0) {
        errno = -r;
        return die("START_DEV");
    }
    if (how == "pipe-lock") {
        for (auto& [rd, wr] : pipes) {
            holders.push_back(std::make_unique<PipeHolder>(rd.get(), wr.get()));
            if (!holders.back()->ok()) {
                std::fprintf(stderr, "userblk_stall_daemon: %s\n", holders.back()->error().c_str());
                return 1;
            }
        }
    }
    std::string path = std::string("/dev/" USERBLK_DISK_PREFIX) + std::to_string(cfg.dev_id);
    if (!wait_for_path(path)) {
        std::fprintf(stderr, "userblk_stall_daemon: %s did not appear\n", path.c_str());
        return 1;
    }

    // The serving thread: takes requests and stalls the way asked. It ends when the device
    // does (read() gives 0 or ENODEV) or when its stalled call is let go.
    std::atomic<bool> ending{false};
    std::thread server([&] {
        std::vector<char> buf(USERBLK_COPY_MIN_READ(cfg.max_io_bytes));
        while (!ending.load()) {
            pollfd p{q.get(), POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0)
                continue;
            if (p.revents & POLLHUP)
                return;
            if (mode == USERBLK_MODE_RING)
                continue; // requests are published in the ring and never answered
            if (how == "uffd" && mode != USERBLK_MODE_SPLICE) {
                (void)::read(q.get(), stalled->data(), stalled->size()); // stalls in the copy
                continue;
            }
            ssize_t n = ::read(q.get(), buf.data(), sizeof(userblk_io_desc));
            if (n == 0)
                return;
            if (n < (ssize_t)sizeof(userblk_io_desc))
                continue;
            userblk_io_desc d{};
            std::memcpy(&d, buf.data(), sizeof(d));
            if (mode == USERBLK_MODE_SPLICE && d.len > 0) {
                uint64_t off = USERBLK_SPLICE_OFF(d.tag, d.gen, 0);
                if (d.op == USERBLK_OP_WRITE)
                    (void)::pread(data.get(), stalled->data(), d.len, off); // stalls
                else if (d.op == USERBLK_OP_READ)
                    (void)::pwrite(data.get(), stalled->data(), d.len, off); // stalls
            }
            // pipe-lock: the request could not be handed out, or is never answered.
        }
    });

    std::printf("%u %s\n", cfg.dev_id, path.c_str());
    std::fflush(stdout);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread waiter([&] {
        char c;
        while (::read(STDIN_FILENO, &c, 1) > 0) {
        }
        ::kill(::getpid(), SIGTERM);
    });
    waiter.detach();
    int sig = 0;
    sigwait(&set, &sig);
    ending = true;
    if (stalled)
        stalled->release();
    for (auto& h : holders)
        h->release();
    server.join();
    if (ring != nullptr)
        ::munmap(ring, l.map_size);
    return 0;
}
