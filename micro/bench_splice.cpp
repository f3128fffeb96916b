// Moving data through pipes, into files and into sockets: read()/write() (the data is copied
// through user space) against vmsplice() + splice() (user pages are referenced by the pipe and
// the kernel moves or copies them onward once). 4 KiB to 1 MiB, single thread except for the
// reader that drains a socket.
#include <cerrno>
#include <string>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "scratch.h"

namespace userblk::micro {

namespace {

struct Pipe {
    unique_fd r;
    unique_fd w;
};

/// A pipe that holds io_size_max bytes, so one I/O fits without a reader running.
bool make_pipe(Pipe& p, benchmark::State& state) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        state.SkipWithError(errno_text("pipe2").c_str());
        return false;
    }
    p.r.reset(fds[0]);
    p.w.reset(fds[1]);
    if (::fcntl(p.w.get(), F_SETPIPE_SZ, static_cast<int>(io_size_max)) < 0) {
        state.SkipWithError(
            errno_text("F_SETPIPE_SZ to 1 MiB (see /proc/sys/fs/pipe-max-size)").c_str());
        return false;
    }
    return true;
}

bool write_all(int fd, const std::byte* p, std::size_t n) {
    while (n > 0) {
        ssize_t k = ::write(fd, p, n);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return false;
        }
        p += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

bool read_all(int fd, std::byte* p, std::size_t n) {
    while (n > 0) {
        ssize_t k = ::read(fd, p, n);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return false;
        }
        p += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

bool vmsplice_all(int pipe_w, std::byte* p, std::size_t n) {
    while (n > 0) {
        iovec iov{p, n};
        ssize_t k = ::vmsplice(pipe_w, &iov, 1, 0);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return false;
        }
        p += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

/// Splices n bytes from pipe_r to out, at *off (a file) or at its position (off null: a socket).
bool splice_all(int pipe_r, int out, loff_t* off, std::size_t n) {
    while (n > 0) {
        ssize_t k = ::splice(pipe_r, nullptr, out, off, n, SPLICE_F_MOVE);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return false;
        }
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

void pipe_write_read(benchmark::State& state) {
    const auto len = static_cast<std::size_t>(state.range(0));
    Pipe p;
    Mapping src = touched_buffer(len);
    Mapping dst = touched_buffer(len);
    if (!make_pipe(p, state)) {
        return;
    }
    for (auto _ : state) {
        if (!write_all(p.w.get(), src.data(), len) || !read_all(p.r.get(), dst.data(), len)) {
            state.SkipWithError(errno_text("pipe write/read").c_str());
            break;
        }
    }
    set_op_counters(state, 1, state.range(0));
}

void pipe_vmsplice_read(benchmark::State& state) {
    const auto len = static_cast<std::size_t>(state.range(0));
    Pipe p;
    Mapping src = touched_buffer(len);
    Mapping dst = touched_buffer(len);
    if (!make_pipe(p, state)) {
        return;
    }
    for (auto _ : state) {
        if (!vmsplice_all(p.w.get(), src.data(), len) || !read_all(p.r.get(), dst.data(), len)) {
            state.SkipWithError(errno_text("pipe vmsplice/read").c_str());
            break;
        }
    }
    set_op_counters(state, 1, state.range(0));
}

enum class FileKind : std::uint8_t { tmpfs, disk };

unique_fd open_scratch(FileKind kind, std::size_t len, benchmark::State& state) {
    const ScratchDirs& d = scratch_dirs();
    const std::string& dir = kind == FileKind::tmpfs ? d.tmpfs : d.disk;
    if (dir.empty()) {
        const std::string& why = kind == FileKind::tmpfs ? d.tmpfs_why : d.disk_why;
        state.SkipWithError(why.c_str());
        return unique_fd{};
    }
    unique_fd fd = scratch_file(dir, len);
    if (!fd) {
        state.SkipWithError(errno_text("scratch file in " + dir).c_str());
    }
    return fd;
}

/// pwrite() of the same len bytes at offset 0: one copy into the page cache.
void file_pwrite(benchmark::State& state, FileKind kind) {
    const auto len = static_cast<std::size_t>(state.range(0));
    unique_fd fd = open_scratch(kind, len, state);
    Mapping src = touched_buffer(len);
    if (!fd) {
        return;
    }
    for (auto _ : state) {
        if (::pwrite(fd.get(), src.data(), len, 0) != static_cast<ssize_t>(len)) {
            state.SkipWithError(errno_text("pwrite").c_str());
            break;
        }
    }
    set_op_counters(state, 1, state.range(0));
}

/// vmsplice() the user buffer into a pipe, splice() the pipe to the file at offset 0.
void file_vmsplice_splice(benchmark::State& state, FileKind kind) {
    const auto len = static_cast<std::size_t>(state.range(0));
    unique_fd fd = open_scratch(kind, len, state);
    Mapping src = touched_buffer(len);
    Pipe p;
    if (!fd || !make_pipe(p, state)) {
        return;
    }
    for (auto _ : state) {
        loff_t off = 0;
        if (!vmsplice_all(p.w.get(), src.data(), len) ||
            !splice_all(p.r.get(), fd.get(), &off, len)) {
            state.SkipWithError(errno_text("vmsplice/splice to a file").c_str());
            break;
        }
    }
    set_op_counters(state, 1, state.range(0));
}

enum class SocketKind : std::uint8_t { unix_stream, tcp_loopback };

struct Connection {
    unique_fd tx;
    unique_fd rx;
};

bool connect_unix(Connection& c, benchmark::State& state) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
        state.SkipWithError(errno_text("socketpair(AF_UNIX)").c_str());
        return false;
    }
    c.tx.reset(fds[0]);
    c.rx.reset(fds[1]);
    return true;
}

bool connect_tcp(Connection& c, benchmark::State& state) {
    unique_fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(addr);
    auto* sa = reinterpret_cast<sockaddr*>(&addr);
    if (!listener || ::bind(listener.get(), sa, sizeof(addr)) != 0 ||
        ::listen(listener.get(), 1) != 0 || ::getsockname(listener.get(), sa, &alen) != 0) {
        state.SkipWithError(errno_text("TCP listener on 127.0.0.1").c_str());
        return false;
    }
    c.tx.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!c.tx || ::connect(c.tx.get(), sa, sizeof(addr)) != 0) {
        state.SkipWithError(errno_text("TCP connect to 127.0.0.1").c_str());
        return false;
    }
    c.rx.reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c.rx) {
        state.SkipWithError(errno_text("TCP accept").c_str());
        return false;
    }
    int one = 1;
    ::setsockopt(c.tx.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return true;
}

/// Sends len bytes per iteration into a socket, by write() or by vmsplice() + splice(), while a
/// second thread reads everything out. The time is the sender's wall time, so a reader that
/// cannot keep up shows.
void socket_send(benchmark::State& state, SocketKind kind, bool use_splice) {
    const auto len = static_cast<std::size_t>(state.range(0));
    Connection c;
    if (!(kind == SocketKind::unix_stream ? connect_unix(c, state) : connect_tcp(c, state))) {
        return;
    }
    Pipe p;
    if (use_splice && !make_pipe(p, state)) {
        return;
    }
    Mapping src = touched_buffer(len);
    Mapping sink = touched_buffer(static_cast<std::size_t>(io_size_max));
    std::thread reader([&c, &sink] {
        while (::read(c.rx.get(), sink.data(), sink.size()) > 0) {
        }
    });
    for (auto _ : state) {
        bool ok = use_splice ? vmsplice_all(p.w.get(), src.data(), len) &&
                                   splice_all(p.r.get(), c.tx.get(), nullptr, len)
                             : write_all(c.tx.get(), src.data(), len);
        if (!ok) {
            state.SkipWithError(errno_text("sending into the socket").c_str());
            break;
        }
    }
    ::shutdown(c.tx.get(), SHUT_WR);
    reader.join();
    set_op_counters(state, 1, state.range(0));
}

void sizes(benchmark::internal::Benchmark* b) {
    b->RangeMultiplier(io_step)->Range(io_size_min, io_size_max)->UseRealTime();
}

} // namespace

void register_splice() {
    sizes(benchmark::RegisterBenchmark("pipe/write+read", pipe_write_read));
    sizes(benchmark::RegisterBenchmark("pipe/vmsplice+read", pipe_vmsplice_read));
    for (auto [name, kind] : {std::pair{"tmpfs", FileKind::tmpfs}, {"disk", FileKind::disk}}) {
        // Without such a folder (the VM has only tmpfs and 9p) the context's disk_dir says why.
        if ((kind == FileKind::tmpfs ? scratch_dirs().tmpfs : scratch_dirs().disk).empty()) {
            continue;
        }
        sizes(benchmark::RegisterBenchmark((std::string("file/pwrite:") + name).c_str(),
                                           file_pwrite, kind));
        sizes(benchmark::RegisterBenchmark((std::string("file/vmsplice+splice:") + name).c_str(),
                                           file_vmsplice_splice, kind));
    }
    for (auto [name, kind] :
         {std::pair{"unix", SocketKind::unix_stream}, {"tcp", SocketKind::tcp_loopback}}) {
        sizes(benchmark::RegisterBenchmark((std::string("socket/write:") + name).c_str(),
                                           socket_send, kind, false));
        sizes(benchmark::RegisterBenchmark((std::string("socket/vmsplice+splice:") + name).c_str(),
                                           socket_send, kind, true));
    }
}

} // namespace userblk::micro
