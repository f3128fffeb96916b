// The forward backend against a real nbdkit started by each test (skipped only when nbdkit is not
// installed): both data paths, what goes on the wire (nbdkit's log filter), server errors, and a
// server that refuses, is too small, is missing, dies or stops answering.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend_fixtures.h"
#include "core/io.h"
#include "core/unique_fd.h"
#include "test_util.h"

namespace {

using namespace userblk;
using test::all_zero;
using test::BackendWithQueue;
using test::Options;
using test::pattern;

constexpr std::uint64_t kMiB = 1 << 20;

std::string slurp(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

/// The lines of nbdkit's log filter for requests (not the "...X return" lines), e.g.
/// "Write offset=0x0 count=0x200 fua=1": the word after "connection=N " and the fields up to "
/// ...", without the id.
std::vector<std::string> logged_requests(const std::string& log) {
    std::vector<std::string> out;
    std::istringstream lines(log);
    for (std::string line; std::getline(lines, line);) {
        auto at = line.find(" connection=");
        if (at == std::string::npos) {
            continue;
        }
        std::string rest = line.substr(line.find(' ', at + 1) + 1);
        if (rest.rfind("...", 0) == 0 || rest.rfind("Connect", 0) == 0 ||
            rest.rfind("Disconnect", 0) == 0) {
            continue;
        }
        if (auto id = rest.find(" id="); id != std::string::npos) {
            auto end = rest.find(' ', id + 1);
            rest.erase(id, end == std::string::npos ? std::string::npos : end - id);
        }
        if (auto dots = rest.find(" ..."); dots != std::string::npos) {
            rest.resize(dots);
        }
        out.push_back(rest);
    }
    return out;
}

/// A TCP server on a free loopback port that answers every connection with greeting and closes
/// it.
class FakeServer {
public:
    explicit FakeServer(std::string greeting)
        : listener_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(addr);
        if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 ||
            ::listen(listener_.get(), 4) < 0 ||
            ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
            ADD_FAILURE() << "cannot listen: " << std::strerror(errno);
            return;
        }
        port_ = ntohs(addr.sin_port);
        thread_ = std::jthread([this, greeting = std::move(greeting)](std::stop_token stop) {
            while (!stop.stop_requested()) {
                pollfd p{listener_.get(), POLLIN, 0};
                if (::poll(&p, 1, 50) <= 0) {
                    continue;
                }
                unique_fd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
                if (c.valid()) {
                    (void)::send(c.get(), greeting.data(), greeting.size(), MSG_NOSIGNAL);
                }
            }
        });
    }
    [[nodiscard]] std::string port_string() const { return std::to_string(port_); }

private:
    unique_fd listener_;
    std::uint16_t port_ = 0;
    std::jthread thread_; // last: stopped and joined before the listener closes
};

class ForwardBackend : public ::testing::Test {
protected:
    void SetUp() override {
        if (!test::nbdkit_installed()) {
            GTEST_SKIP() << test::kNoNbdkit;
        }
    }

    /// Starts `nbdkit ARGS...` (plugin, parameters, filters).
    test::Nbdkit& serve(const std::vector<std::string>& args) {
        server_ = std::make_unique<test::Nbdkit>(args);
        return *server_;
    }

    /// The forward backend of size bytes on the server, with extra options.
    Result<std::unique_ptr<Backend>> make(std::uint64_t size, const Options& extra = {},
                                          std::uint32_t queues = 1) {
        Options o = server_->options();
        for (const auto& [k, v] : extra) {
            o[k] = v;
        }
        return find_backend("forward")->make(BackendConfig{size, 512, queues, 0, o});
    }

    /// The forward backend on the server with one queue (b_).
    BackendWithQueue& open(std::uint64_t size, const Options& extra = {}) {
        Options o = server_->options();
        for (const auto& [k, v] : extra) {
            o[k] = v;
        }
        b_.emplace("forward", size, 64 * 1024, o);
        return *b_;
    }

    /// Reads back [off, off+len) through the memory path.
    std::vector<std::byte> read_back(std::uint64_t off, std::size_t len) {
        std::vector<std::byte> out(len);
        EXPECT_EQ(b_->backend->read(*b_->queue, off, out), 0);
        return out;
    }

    std::unique_ptr<test::Nbdkit> server_;
    std::optional<BackendWithQueue> b_;
};

// --- data
// -----------------------------------------------------------------------------------------

TEST_F(ForwardBackend, MemoryPathRoundTrip) {
    serve({"memory", "size=64M"});
    BackendWithQueue& b = open(64 * kMiB);
    ASSERT_TRUE(b.queue);
    EXPECT_TRUE(b.backend->native_pipe());
    auto a = pattern(256 * 1024, 1);
    auto c = pattern(1536, 2);
    ASSERT_EQ(b.backend->write(*b.queue, kMiB, a, 0), 0);
    ASSERT_EQ(b.backend->write(*b.queue, kMiB + 4096, c, USERBLK_IO_F_FUA), 0);
    auto want = a;
    std::memcpy(want.data() + 4096, c.data(), c.size());
    EXPECT_EQ(read_back(kMiB, want.size()), want);
    EXPECT_TRUE(all_zero(read_back(32 * kMiB, 65536)));
    ASSERT_EQ(b.backend->write(*b.queue, 64 * kMiB - 512, std::span(c).first(512), 0), 0);
    EXPECT_EQ(read_back(64 * kMiB - 512, 512), std::vector(c.begin(), c.begin() + 512));
    StatsSnapshot s = b.stats.snapshot();
    EXPECT_EQ(s.adapter_copied_bytes, 0U);
}

TEST_F(ForwardBackend, DataLandsOnTheServer) {
    test::TempDir dir;
    std::string path = dir.file("export.img");
    {
        unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
        ASSERT_EQ(::ftruncate(fd.get(), 4 * kMiB), 0);
    }
    serve({"file", "file=" + path});
    BackendWithQueue& b = open(4 * kMiB);
    ASSERT_TRUE(b.queue);
    auto mem = pattern(8192, 3);
    auto piped = pattern(16384, 4);
    ASSERT_EQ(b.backend->write(*b.queue, 4096, mem, 0), 0);
    test::Pipe p;
    ASSERT_TRUE(test::write_all(p.w.get(), piped));
    ASSERT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 2 * kMiB, 16384, USERBLK_IO_F_FUA),
              0);
    ASSERT_EQ(b.backend->flush(*b.queue), 0);
    std::vector<std::byte> file(8192);
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_EQ(::pread(fd.get(), file.data(), file.size(), 4096), 8192);
    EXPECT_EQ(file, mem);
    file.resize(16384);
    ASSERT_EQ(::pread(fd.get(), file.data(), file.size(), 2 * kMiB), 16384);
    EXPECT_EQ(file, piped);
}

TEST_F(ForwardBackend, PipePathRoundTripNeverCopiesThroughTheDaemon) {
    serve({"memory", "size=8M"});
    BackendWithQueue& b = open(8 * kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(32768, 5);
    test::Pipe p;
    ASSERT_TRUE(test::write_all(p.w.get(), data));
    ASSERT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), kMiB + 512, 32768, 0), 0);
    ASSERT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), kMiB + 512, 32768), 0);
    EXPECT_EQ(test::read_n(p.r.get(), data.size()), data);
    // Across paths.
    EXPECT_EQ(read_back(kMiB + 512, data.size()), data);
    auto more = pattern(4096, 6);
    ASSERT_EQ(b.backend->write(*b.queue, 0, more, 0), 0);
    ASSERT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), 0, 4096), 0);
    EXPECT_EQ(test::read_n(p.r.get(), 4096), more);

    StatsSnapshot s = b.stats.snapshot();
    EXPECT_EQ(s.adapter_copied_bytes, 0U);
    EXPECT_EQ(s.user_data_bytes, 0U);
}

TEST_F(ForwardBackend, PipePathWaitsOnANonBlockingPipe) {
    constexpr std::uint32_t kLen = 1 << 20; // 16 times a pipe's default capacity
    serve({"memory", "size=8M"});
    BackendWithQueue& b = open(8 * kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(kLen, 7);
    test::Pipe p(O_NONBLOCK);
    std::jthread writer([&] {
        int flags = ::fcntl(p.w.get(), F_GETFL);
        ::fcntl(p.w.get(), F_SETFL, flags & ~O_NONBLOCK);
        test::write_all(p.w.get(), data);
    });
    ASSERT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 0, kLen, 0), 0);
    writer.join();
    std::vector<std::byte> got;
    std::jthread reader([&] {
        int flags = ::fcntl(p.r.get(), F_GETFL);
        ::fcntl(p.r.get(), F_SETFL, flags & ~O_NONBLOCK);
        got = test::read_n(p.r.get(), kLen);
    });
    ASSERT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), 0, kLen), 0);
    reader.join();
    EXPECT_EQ(got, data);
    EXPECT_EQ(b.stats.adapter_copied_bytes.get(), 0U);
}

TEST_F(ForwardBackend, QueuesHaveTheirOwnConnections) {
    constexpr unsigned kQueues = 3;
    serve({"memory", "size=" + std::to_string(kQueues * kMiB)});
    auto made = make(kQueues * kMiB, {}, kQueues);
    ASSERT_TRUE(made.ok()) << made.status().message();
    std::unique_ptr<Backend> fwd = std::move(made).value();
    DeviceStats stats(kQueues);
    std::vector<BackendQueue> queues;
    for (unsigned i = 0; i < kQueues; ++i) {
        auto q = BackendQueue::open(*fwd, i, 4096, stats.queue(i));
        ASSERT_TRUE(q.ok()) << q.status().message();
        queues.push_back(std::move(q).value());
    }
    std::atomic<unsigned> failures{0};
    {
        std::vector<std::jthread> threads;
        for (unsigned i = 0; i < kQueues; ++i) {
            threads.emplace_back([&, i] {
                test::Pipe p;
                std::vector<std::byte> back(8192);
                for (unsigned round = 0; round < 32; ++round) {
                    std::uint64_t off = i * kMiB + round * std::uint64_t{8192};
                    auto data = pattern(8192, i * 100 + round);
                    bool ok = (round % 2 == 0) ? fwd->write(queues[i], off, data, 0) == 0
                                               : test::write_all(p.w.get(), data) &&
                                                     fwd->write_from_pipe(queues[i], p.r.get(), off,
                                                                          8192, 0) == 0;
                    ok = ok && fwd->read(queues[i], off, back) == 0 && back == data;
                    if (!ok) {
                        failures.fetch_add(1);
                    }
                }
            });
        }
    }
    EXPECT_EQ(failures.load(), 0U);
    // Each queue sees what the others wrote: one export behind every connection.
    std::vector<std::byte> back(8192);
    ASSERT_EQ(fwd->read(queues[0], 2 * kMiB + 31 * 8192, back), 0);
    EXPECT_EQ(back, pattern(8192, 200 + 31));
}

// --- commands
// -------------------------------------------------------------------------------------

TEST_F(ForwardBackend, FlushTrimAndWriteZeroes) {
    serve({"memory", "size=4M"});
    BackendWithQueue& b = open(4 * kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(65536, 8);
    ASSERT_EQ(b.backend->write(*b.queue, 0, data, 0), 0);
    ASSERT_EQ(b.backend->flush(*b.queue), 0);
    ASSERT_EQ(b.backend->discard(*b.queue, 4096, 8192), 0);
    ASSERT_EQ(b.backend->write_zeroes(*b.queue, 32768, 4096), 0);
    auto back = read_back(0, data.size());
    auto want = data;
    std::fill(want.begin() + 4096, want.begin() + 4096 + 8192, std::byte{0}); // memory trims to 0
    std::fill(want.begin() + 32768, want.begin() + 32768 + 4096, std::byte{0});
    EXPECT_EQ(back, want);
    EXPECT_EQ(b.backend->discard(*b.queue, 4 * kMiB - 512, 1024), -EINVAL);
    EXPECT_EQ(b.backend->write_zeroes(*b.queue, UINT64_MAX, 2), -EINVAL);
}

TEST_F(ForwardBackend, CommandsGoOnTheWireAsTheServerTakesThem) {
    test::TempDir dir;
    std::string log = dir.file("log");
    serve({"--filter=log", "memory", "size=1M", "logfile=" + log});
    BackendWithQueue& b = open(kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(4096, 9);
    ASSERT_EQ(b.backend->write(*b.queue, 0, data, USERBLK_IO_F_FUA), 0);
    test::Pipe p;
    ASSERT_TRUE(test::write_all(p.w.get(), data));
    ASSERT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 8192, 4096, USERBLK_IO_F_FUA), 0);
    ASSERT_EQ(b.backend->flush(*b.queue), 0);
    ASSERT_EQ(b.backend->discard(*b.queue, 0, 512), 0);
    ASSERT_EQ(b.backend->write_zeroes(*b.queue, 512, 1024), 0);
    ASSERT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), 8192, 4096), 0);
    std::vector<std::string> want = {
        "Write offset=0x0 count=0x1000 fua=1",
        "Write offset=0x2000 count=0x1000 fua=1",
        "Flush",
        "Trim offset=0x0 count=0x200 fua=0",
        "Zero offset=0x200 count=0x400 trim=1 fua=0 fast=0",
        "Read offset=0x2000 count=0x1000",
    };
    EXPECT_EQ(logged_requests(slurp(log)), want) << slurp(log);
}

TEST_F(ForwardBackend, FuaBecomesAFlushWhenTheServerTakesNoFuaFlag) {
    test::TempDir dir;
    std::string log = dir.file("log");
    // The fua filter's default mode advertises no FUA; the memory plugin has a flush.
    serve({"--filter=log", "--filter=fua", "memory", "size=1M", "logfile=" + log});
    BackendWithQueue& b = open(kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(4096, 10);
    ASSERT_EQ(b.backend->write(*b.queue, 0, data, USERBLK_IO_F_FUA), 0);
    test::Pipe p;
    ASSERT_TRUE(test::write_all(p.w.get(), data));
    ASSERT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 4096, 4096, USERBLK_IO_F_FUA), 0);
    ASSERT_EQ(b.backend->write(*b.queue, 8192, data, 0), 0);
    std::vector<std::string> want = {
        "Write offset=0x0 count=0x1000 fua=0",    "Flush",
        "Write offset=0x1000 count=0x1000 fua=0", "Flush",
        "Write offset=0x2000 count=0x1000 fua=0",
    };
    EXPECT_EQ(logged_requests(slurp(log)), want) << slurp(log);
}

TEST_F(ForwardBackend, WriteZeroesFallsBackToWritesWithoutServerSupport) {
    test::TempDir dir;
    std::string log = dir.file("log");
    serve({"--filter=log", "--filter=nozero", "memory", "size=1M", "logfile=" + log});
    BackendWithQueue& b = open(kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(8192, 11);
    ASSERT_EQ(b.backend->write(*b.queue, 0, data, 0), 0);
    ASSERT_EQ(b.backend->write_zeroes(*b.queue, 1024, 2048), 0);
    auto back = read_back(0, 8192);
    auto want = data;
    std::fill(want.begin() + 1024, want.begin() + 3072, std::byte{0});
    EXPECT_EQ(back, want);
    auto requests = logged_requests(slurp(log));
    ASSERT_EQ(requests.size(), 3U) << slurp(log);
    EXPECT_EQ(requests[1], "Write offset=0x400 count=0x800 fua=0");
}

TEST_F(ForwardBackend, ReadOnlyServerRefusesWritesAndTrims) {
    serve({"-r", "pattern", "size=1M"});
    BackendWithQueue& b = open(kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(4096, 12);
    EXPECT_EQ(b.backend->write(*b.queue, 0, data, 0), -EPERM);
    EXPECT_EQ(b.backend->discard(*b.queue, 0, 4096), -EOPNOTSUPP);
    // The connection is still good: the pattern plugin's bytes read back.
    std::vector<std::byte> back(16);
    ASSERT_EQ(b.backend->read(*b.queue, 8, back), 0);
    EXPECT_EQ(back[7], std::byte{8}); // big-endian offset 8 in the first 8-byte word
}

// --- what the server serves, from the handshake's transmission flags ---------------------------

TEST_F(ForwardBackend, ServesWhatTheServerAdvertises) {
    serve({"memory", "size=1M"}); // flush, trim, zero
    auto made = make(kMiB);
    ASSERT_TRUE(made.ok()) << made.status().message();
    BackendServes s = made.value()->serves();
    EXPECT_TRUE(s.write);
    EXPECT_TRUE(s.cache);
    EXPECT_TRUE(s.discard);
    EXPECT_TRUE(s.write_zeroes);
}

TEST_F(ForwardBackend, ServesNoCacheAndNoDiscardWhereTheServerHasNeither) {
    // A writable export without flush or trim: nbdkit's eval plugin offers exactly the
    // callbacks it is given.
    serve({"eval", "get_size=echo 1048576",
           "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
           "pwrite=cat >/dev/null"});
    auto made = make(kMiB);
    ASSERT_TRUE(made.ok()) << made.status().message();
    BackendServes s = made.value()->serves();
    EXPECT_TRUE(s.write);
    EXPECT_FALSE(s.cache);
    EXPECT_FALSE(s.discard);
    EXPECT_TRUE(s.write_zeroes) << "zero blocks written where the server has no command";
    EXPECT_EQ(default_features(s), USERBLK_F_WRITE_ZEROES);
}

TEST_F(ForwardBackend, AReadOnlyExportServesAReadOnlyDevice) {
    serve({"-r", "pattern", "size=1M"});
    auto made = make(kMiB);
    ASSERT_TRUE(made.ok()) << made.status().message();
    BackendServes s = made.value()->serves();
    EXPECT_FALSE(s.write);
    EXPECT_EQ(default_features(s), USERBLK_F_READ_ONLY);
}

TEST_F(ForwardBackend, ServerErrorsBecomeErrnoAndKeepTheConnection) {
    serve({"--filter=error", "memory", "size=1M", "error=ENOSPC", "error-pwrite-rate=100%"});
    BackendWithQueue& b = open(kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(4096, 13);
    EXPECT_EQ(b.backend->write(*b.queue, 0, data, 0), -ENOSPC);
    test::Pipe p;
    ASSERT_TRUE(test::write_all(p.w.get(), data));
    EXPECT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 0, 4096, 0), -ENOSPC);
    EXPECT_TRUE(all_zero(read_back(0, 4096)));
    ASSERT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), 0, 4096), 0);
    EXPECT_TRUE(all_zero(test::read_n(p.r.get(), 4096)));
}

TEST_F(ForwardBackend, ShortPipeFailsTheWriteButKeepsTheStreamInStep) {
    serve({"memory", "size=1M"});
    BackendWithQueue& b = open(kMiB);
    ASSERT_TRUE(b.queue);
    {
        test::Pipe p;
        auto part = pattern(1000, 14);
        ASSERT_TRUE(test::write_all(p.w.get(), part));
        p.w.reset(); // end of file after 1000 bytes
        EXPECT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 0, 4096, 0), -EIO);
    }
    auto data = pattern(4096, 15);
    ASSERT_EQ(b.backend->write(*b.queue, 8192, data, 0), 0);
    EXPECT_EQ(read_back(8192, 4096), data);
}

TEST_F(ForwardBackend, DescribesTheServer) {
    auto& s = serve({"memory", "size=1M"});
    BackendWithQueue& b = open(kMiB);
    ASSERT_TRUE(b.queue);
    Capabilities caps;
    b.backend->describe(caps);
    EXPECT_EQ(caps.get("server"), "127.0.0.1:" + s.port_string());
    EXPECT_EQ(caps.get("export_size"), "1048576");
    EXPECT_EQ(caps.get("pipe_path"), "splice");
    EXPECT_NE(caps.get("server_flags").value_or("").find("flush"), std::string::npos);
}

// --- servers that will not do ------------------------------------------------------------------

TEST_F(ForwardBackend, ExportSmallerThanTheDeviceNamesBothSizes) {
    auto& s = serve({"memory", "size=1M"});
    auto made = make(4 * kMiB);
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().message(),
              "forward: export '' on 127.0.0.1:" + s.port_string() +
                  " is too small: No space left on device (it has 1048576 bytes (1M), the device "
                  "needs 4194304 (4M))");
}

TEST_F(ForwardBackend, ConnectionRefused) {
    test::RefusingPort port;
    auto made = find_backend("forward")->make(
        BackendConfig{kMiB, 512, 1, 0, {{"port", port.port_string()}}});
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().error_number(), ECONNREFUSED);
    EXPECT_EQ(made.status().message(), "forward: cannot connect to NBD server 127.0.0.1:" +
                                           port.port_string() + ": Connection refused");
}

TEST_F(ForwardBackend, ServerRefusesTheExport) {
    auto& s = serve(
        {"--filter=exportname", "memory", "size=1M", "exportname-strict=true", "exportname=good"});
    auto bad = make(kMiB, {{"export", "bad"}});
    ASSERT_FALSE(bad.ok());
    std::string want =
        "forward: NBD server 127.0.0.1:" + s.port_string() + " refused export 'bad': ";
    EXPECT_EQ(bad.status().message().rfind(want, 0), 0U) << bad.status().message();
    auto good = make(kMiB, {{"export", "good"}});
    EXPECT_TRUE(good.ok()) << good.status().message();
}

TEST_F(ForwardBackend, NotAnNbdServer) {
    FakeServer http("HTTP/1.1 400 Bad Request\r\n\r\n");
    auto made = find_backend("forward")->make(
        BackendConfig{kMiB, 512, 1, 0, {{"port", http.port_string()}}});
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().message(),
              "forward: NBD server 127.0.0.1:" + http.port_string() +
                  ": handshake failed: Protocol error (it is not an NBD server (no NBDMAGIC "
                  "greeting))");
}

TEST_F(ForwardBackend, OldStyleServer) {
    std::string hello = "NBDMAGIC";
    for (int shift = 56; shift >= 0; shift -= 8) {
        hello += static_cast<char>((0x0000420281861253ULL >> shift) & 0xff);
    }
    hello += std::string(16, '\0');
    FakeServer old(hello);
    auto made = find_backend("forward")->make(
        BackendConfig{kMiB, 512, 1, 0, {{"port", old.port_string()}}});
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().message(),
              "forward: NBD server 127.0.0.1:" + old.port_string() +
                  ": handshake failed: Protocol error (it speaks the old-style handshake; only "
                  "fixed newstyle is supported)");
}

TEST_F(ForwardBackend, BadOptionsAreRefusedBeforeConnecting) {
    auto msg = [](Options o) {
        auto made = find_backend("forward")->make(BackendConfig{kMiB, 512, 1, 0, std::move(o)});
        EXPECT_FALSE(made.ok());
        return made.ok() ? std::string() : made.status().message();
    };
    EXPECT_EQ(msg({{"port", "0"}}), "forward: invalid port='0': Invalid argument (expected a "
                                    "whole number from 1 to 65535)");
    EXPECT_EQ(msg({{"port", "70000"}}), "forward: invalid port='70000': Invalid argument "
                                        "(expected a whole number from 1 to 65535)");
    EXPECT_EQ(msg({{"port", "http"}}), "forward: invalid port='http': Invalid argument (expected "
                                       "a whole number from 1 to 65535)");
    EXPECT_EQ(msg({{"timeout-ms", "0"}}), "forward: invalid timeout-ms='0': Invalid argument "
                                          "(expected a whole number from 1 to 3600000)");
    EXPECT_EQ(msg({{"host", ""}}),
              "forward: invalid host='': Invalid argument (expected a name or address)");
    EXPECT_EQ(msg({{"path", "/x"}}), "forward: unknown option 'path': Invalid argument (forward "
                                     "takes: host, port, export, timeout-ms)");
}

TEST_F(ForwardBackend, SeveralQueuesNeedMultiConnWhenTheServerCaches) {
    auto& s = serve({"--filter=multi-conn", "memory", "size=1M", "multi-conn-mode=disable"});
    auto two = make(kMiB, {}, 2);
    ASSERT_FALSE(two.ok());
    EXPECT_EQ(two.status().message(),
              "forward: export '' on 127.0.0.1:" + s.port_string() +
                  " cannot serve 2 queues: Invalid argument (it has a write cache but does not "
                  "advertise multi-conn, so a flush on one queue's connection would not cover "
                  "the others; use one queue)");
    EXPECT_TRUE(make(kMiB, {}, 1).ok());
}

// --- a server that goes away -------------------------------------------------------------------

TEST_F(ForwardBackend, ServerKilledMidUseFailsFastAndForGood) {
    auto& s = serve({"memory", "size=1M"});
    BackendWithQueue& b = open(kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(4096, 16);
    ASSERT_EQ(b.backend->write(*b.queue, 0, data, 0), 0);
    s.kill();
    auto start = std::chrono::steady_clock::now();
    std::vector<std::byte> back(4096);
    EXPECT_EQ(b.backend->read(*b.queue, 0, back), -EIO);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
    // Every later request fails at once, on both paths.
    test::Pipe p;
    ASSERT_TRUE(test::write_all(p.w.get(), data));
    EXPECT_EQ(b.backend->write(*b.queue, 0, data, 0), -EIO);
    EXPECT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 0, 4096, 0), -EIO);
    EXPECT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), 0, 4096), -EIO);
    EXPECT_EQ(b.backend->flush(*b.queue), -EIO);
    EXPECT_EQ(b.backend->discard(*b.queue, 0, 4096), -EIO);
    EXPECT_EQ(b.backend->write_zeroes(*b.queue, 0, 4096), -EIO);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
    // A new queue cannot connect either.
    QueueStats stats;
    auto q = BackendQueue::open(*b.backend, 1, 4096, stats);
    ASSERT_FALSE(q.ok());
    EXPECT_NE(q.status().message().find("forward: queue 1: cannot connect to NBD server"),
              std::string::npos)
        << q.status().message();
}

TEST_F(ForwardBackend, ServerKilledDuringAPipeReadFailsIt) {
    auto& s = serve({"--filter=delay", "memory", "size=1M", "rdelay=300ms"});
    BackendWithQueue& b = open(kMiB);
    ASSERT_TRUE(b.queue);
    test::Pipe p;
    std::jthread killer([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        s.kill();
    });
    EXPECT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), 0, 4096), -EIO);
    killer.join();
    std::vector<std::byte> back(512);
    EXPECT_EQ(b.backend->read(*b.queue, 0, back), -EIO);
}

TEST_F(ForwardBackend, ServerThatStopsAnsweringTimesOut) {
    // Reads are delayed far beyond the timeout; the handshake is not.
    serve({"--filter=delay", "memory", "size=1M", "rdelay=20"});
    ASSERT_TRUE(make(kMiB).ok()); // nbdkit is up: the short timeout applies to it alone
    BackendWithQueue& b = open(kMiB, {{"timeout-ms", "300"}});
    ASSERT_TRUE(b.queue);
    auto start = std::chrono::steady_clock::now();
    std::vector<std::byte> back(4096);
    EXPECT_EQ(b.backend->read(*b.queue, 0, back), -EIO);
    auto took = std::chrono::steady_clock::now() - start;
    EXPECT_GE(took, std::chrono::milliseconds(250));
    EXPECT_LT(took, std::chrono::seconds(5));
    EXPECT_EQ(b.backend->read(*b.queue, 0, back), -EIO);

    // The pipe path, on a connection of its own.
    BackendWithQueue& c = open(kMiB, {{"timeout-ms", "300"}});
    ASSERT_TRUE(c.queue);
    test::Pipe p(O_NONBLOCK);
    start = std::chrono::steady_clock::now();
    EXPECT_EQ(c.backend->read_to_pipe(*c.queue, p.w.get(), 0, 4096), -EIO);
    took = std::chrono::steady_clock::now() - start;
    EXPECT_GE(took, std::chrono::milliseconds(250));
    EXPECT_LT(took, std::chrono::seconds(5));
}

} // namespace
