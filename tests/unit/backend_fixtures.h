// What backends with options need in a test: a temporary directory (file), an nbdkit server on a
// free loopback port (forward), and fixture_for(), which readies any registered backend.
#pragma once

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/unique_fd.h"
#include "nbd/nbdkit.h"
#include "nbd/sockets.h"
#include "test_util.h"

extern char** environ; // NOLINT(readability-redundant-declaration)

namespace userblk::test {

using Options = decltype(BackendConfig::options);

/// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "userblk-test-XXXXXX");
        if (::mkdtemp(pattern.data()) != nullptr) {
            path_ = pattern;
        }
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        if (!path_.empty()) {
            std::filesystem::remove_all(path_, ec);
        }
    }
    [[nodiscard]] const std::string& path() const noexcept { return path_; }
    [[nodiscard]] std::string file(std::string_view name) const {
        return path_ + "/" + std::string(name);
    }

private:
    std::string path_;
};

/// Whether an nbdkit binary is on PATH.
inline bool nbdkit_installed() {
    const char* path = std::getenv("PATH");
    std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
        std::size_t end = dirs.find(':', start);
        std::string dir = dirs.substr(start, end == std::string::npos ? end : end - start);
        if (!dir.empty() && ::access((dir + "/nbdkit").c_str(), X_OK) == 0) {
            return true;
        }
        if (end == std::string::npos) {
            break;
        }
        start = end + 1;
    }
    return false;
}

inline constexpr const char* kNoNbdkit = "nbdkit is not installed (apt-get install nbdkit)";

/// `nbdkit --exit-with-parent ARGS...` serving on a free 127.0.0.1 port, started by the project's
/// one launcher (nbd/nbdkit.h): the listener is made first, so the port is known and accepts
/// connections before nbdkit runs. Also ignores SIGPIPE, as userblk does: the forward backend's
/// splice() to a socket cannot pass MSG_NOSIGNAL.
class Nbdkit {
public:
    explicit Nbdkit(const std::vector<std::string>& args) {
        std::signal(SIGPIPE, SIG_IGN);
        auto listener = nbd::Listener::make(SocketKind::tcp_loopback, "nbdkit");
        if (!listener.ok()) {
            ADD_FAILURE() << listener.status().message();
            return;
        }
        const auto& addr = reinterpret_cast<const sockaddr_in&>(listener->addr);
        port_ = ntohs(addr.sin_port);
        std::vector<std::string> argv = {"nbdkit", "--exit-with-parent"};
        argv.insert(argv.end(), args.begin(), args.end());
        if (Status st = process_.start(argv, std::move(listener->fd)); !st.ok()) {
            ADD_FAILURE() << st.message();
        }
    }

    [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
    [[nodiscard]] std::string port_string() const { return std::to_string(port_); }
    /// The forward backend's options for this server (and export).
    [[nodiscard]] Options options(std::string export_name = "") const {
        return {{"host", "127.0.0.1"}, {"port", port_string()}, {"export", export_name}};
    }

    /// Ends it now (SIGKILL) and reaps it: its connections are closed by the kernel.
    void kill() { process_.kill(); }

private:
    nbd::NbdkitProcess process_;
    std::uint16_t port_ = 0;
};

/// A pipe, both ends owned.
struct Pipe {
    unique_fd r;
    unique_fd w;
    explicit Pipe(int flags = 0) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC | flags) == 0) {
            r.reset(fds[0]);
            w.reset(fds[1]);
        }
    }
};

/// Writes all of data to fd (blocking); false on error.
inline bool write_all(int fd, std::span<const std::byte> data) {
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n <= 0) {
            return false;
        }
        done += static_cast<std::size_t>(n);
    }
    return true;
}

/// Reads n bytes from fd, fewer at end of file or on error.
inline std::vector<std::byte> read_n(int fd, std::size_t n) {
    std::vector<std::byte> out(n);
    std::size_t done = 0;
    while (done < n) {
        ssize_t r = ::read(fd, out.data() + done, n - done);
        if (r <= 0) {
            break;
        }
        done += static_cast<std::size_t>(r);
    }
    out.resize(done);
    return out;
}

/// A loopback port where nothing listens (bound, not listening: connecting is refused, and no
/// one else can take it while this lives).
class RefusingPort {
public:
    RefusingPort() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(addr);
        if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
            ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
            port_ = ntohs(addr.sin_port);
        }
    }
    [[nodiscard]] std::string port_string() const { return std::to_string(port_); }

private:
    unique_fd fd_;
    std::uint16_t port_ = 0;
};

/// What a registered backend needs to be made in a test of size bytes: nothing (null, ram), a
/// temporary file (file), a running nbdkit (forward). A backend that takes no options is covered
/// the day it is registered; one that does gets its case here.
struct BackendFixture {
    std::string skip; ///< not empty: why the backend cannot run here (GTEST_SKIP with it)
    Options options;
    std::unique_ptr<TempDir> dir;
    std::unique_ptr<Nbdkit> server;
};

inline BackendFixture fixture_for(std::string_view name, std::uint64_t size) {
    BackendFixture f;
    if (name == "file") {
        f.dir = std::make_unique<TempDir>();
        f.options = {{"path", f.dir->file("disk.img")}};
    } else if (name == "forward") {
        if (!nbdkit_installed()) {
            f.skip = kNoNbdkit;
            return f;
        }
        f.server = std::make_unique<Nbdkit>(
            std::vector<std::string>{"memory", "size=" + std::to_string(size)});
        f.options = f.server->options();
    }
    return f;
}

/// A registered backend readied by fixture_for() and made with one queue, unless fixture.skip.
struct ReadyBackend {
    BackendFixture fixture;
    std::optional<BackendWithQueue> made;

    ReadyBackend(std::string_view name, std::uint64_t size, std::uint32_t max_io = 64 * 1024)
        : fixture(fixture_for(name, size)) {
        if (fixture.skip.empty()) {
            made.emplace(name, size, max_io, fixture.options);
        }
    }
};

} // namespace userblk::test
