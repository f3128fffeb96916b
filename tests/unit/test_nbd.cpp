// The user-space parts of the nbd and nbdkit transports and the loop reference that need no
// kernel: choosing a free /dev/nbdN from sysfs (a fake folder here), the driver's settings from
// a DeviceConfig, the flags handed to the driver, nbdkit's command line per backend, the
// self-descriptions, the checks create() makes before it touches the kernel, and the CLI's
// --socket and --backend handling for them.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend_fixtures.h"
#include "cli/registry.h"
#include "baselines/nbd/nbd.h"
#include "nbd/device.h"
#include "references/nbdkit.h"
#include "nbd/server.h"
#include "nbd/sockets.h"
#include "test_util.h"

namespace {

using namespace userblk;
using namespace userblk::nbd;

// --- choosing a device ---------------------------------------------------------------------------

/// A fake /sys/block.
class FakeSysBlock {
public:
    /// nbd<n> with a size attribute (sectors) and, if connected, a pid attribute.
    void add(const std::string& name, const std::string& size, bool pid = false) {
        std::filesystem::create_directories(dir_.file(name));
        std::ofstream(dir_.file(name) + "/size") << size << "\n";
        if (pid) {
            std::ofstream(dir_.file(name) + "/pid") << "1234\n";
        }
    }
    [[nodiscard]] const std::string& path() const { return dir_.path(); }

private:
    test::TempDir dir_;
};

TEST(NbdKernel, FirstFreeDeviceHasNoPidAndSizeZero) {
    FakeSysBlock sys;
    sys.add("nbd0", "524288", true); // connected
    sys.add("nbd1", "0", true);      // DO_IT runs, size not yet set
    sys.add("nbd2", "2048");         // configured by someone without DO_IT yet
    sys.add("nbd3", "0");            // free
    sys.add("nbd10", "0");           // free
    sys.add("loop0", "0");
    sys.add("nbd4x", "0");
    EXPECT_EQ(find_free_device(sys.path()), 3U);
    EXPECT_EQ(find_free_device(sys.path(), 4), 10U) << "numeric order, names that are not nbdN "
                                                       "skipped";
    EXPECT_EQ(find_free_device(sys.path(), 11), std::nullopt);
}

TEST(NbdKernel, NumericOrderNotNameOrder) {
    FakeSysBlock sys;
    sys.add("nbd10", "0");
    sys.add("nbd9", "0");
    sys.add("nbd2", "0", true);
    EXPECT_EQ(find_free_device(sys.path()), 9U);
}

TEST(NbdKernel, NoDevicesOrNoFolder) {
    FakeSysBlock sys;
    EXPECT_EQ(find_free_device(sys.path()), std::nullopt);
    EXPECT_EQ(find_free_device("/nonexistent/sys/block"), std::nullopt);
}

TEST(NbdKernel, ModuleIsLoadedWithoutPartitions) {
    const ModuleSpec spec = module_spec();
    EXPECT_EQ(spec.name, "nbd");
    EXPECT_EQ(spec.params, (std::vector<std::string>{"nbds_max=16", "max_part=0"}));
    EXPECT_EQ(spec.ready_path, "/dev/nbd0");
}

// --- settings --------------------------------------------------------------------------------

TEST(NbdSetup, TimeoutIsWholeSecondsRoundedUp) {
    EXPECT_EQ(timeout_seconds(0), 30U) << "userblk.ko's default";
    EXPECT_EQ(timeout_seconds(1), 1U);
    EXPECT_EQ(timeout_seconds(1000), 1U);
    EXPECT_EQ(timeout_seconds(1001), 2U);
    EXPECT_EQ(timeout_seconds(2000), 2U);
    EXPECT_EQ(timeout_seconds(UINT32_MAX), 4294968U) << "no wrap-around";
}

TEST(NbdSetup, DepthLowersTheDriversShare) {
    auto k = kernel_setup(DeviceConfig{.size = 1 << 20, .queue_depth = 32}, "nbd");
    ASSERT_TRUE(k.ok()) << k.status().message();
    EXPECT_EQ(k->depth, 32U);
    auto big = kernel_setup(DeviceConfig{.size = 1 << 20, .queue_depth = 1000}, "nbd");
    ASSERT_TRUE(big.ok()) << big.status().message();
    EXPECT_EQ(big->depth, kKernelQueueDepth) << "the driver's tag set is the ceiling";
    auto none = kernel_setup(DeviceConfig{.size = 1 << 20, .queue_depth = 0}, "nbd");
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.status().message(),
              "nbd: depth 0: Invalid argument (at least 1 request per queue)");
}

TEST(NbdSockets, PairsCarryBytesBothWays) {
    for (SocketKind kind : {SocketKind::unix_stream, SocketKind::tcp_loopback}) {
        auto pair = connected_pair(kind, "test");
        ASSERT_TRUE(pair.ok()) << pair.status().message();
        auto& [client, server] = pair.value();
        char c = 'x';
        ASSERT_EQ(::write(client.get(), &c, 1), 1);
        ASSERT_EQ(::read(server.get(), &c, 1), 1);
        EXPECT_EQ(c, 'x');
        c = 'y';
        ASSERT_EQ(::write(server.get(), &c, 1), 1);
        ASSERT_EQ(::read(client.get(), &c, 1), 1);
        EXPECT_EQ(c, 'y');
    }
}

TEST(NbdSetup, DefaultsAndLimits) {
    auto k = kernel_setup(DeviceConfig{.size = 1 << 20}, "nbd");
    ASSERT_TRUE(k.ok()) << k.status().message();
    EXPECT_EQ(k->size, 1U << 20);
    EXPECT_EQ(k->block_size, 512U);
    EXPECT_EQ(k->timeout_s, 30U);
    EXPECT_EQ(k->max_io_bytes, 512U * 1024) << "split as userblk.ko's devices";
    auto custom = kernel_setup(DeviceConfig{.size = 1 << 20,
                                            .block_size = 4096,
                                            .nr_queues = 4,
                                            .max_io_bytes = 1 << 20,
                                            .timeout_ms = 2500},
                               "nbd");
    ASSERT_TRUE(custom.ok()) << custom.status().message();
    EXPECT_EQ(custom->block_size, 4096U);
    EXPECT_EQ(custom->timeout_s, 3U);
    EXPECT_EQ(custom->max_io_bytes, 1U << 20);

    auto msg = [](DeviceConfig c) {
        auto r = kernel_setup(c, "nbd");
        return r.ok() ? std::string("ok") : r.status().message();
    };
    EXPECT_EQ(msg({.size = 1 << 20, .block_size = 1000}),
              "nbd: block size 1000: Invalid argument (the nbd driver takes 512, 1024, 2048 or "
              "4096)");
    EXPECT_EQ(msg({.size = 1000}), "nbd: size 1000: Invalid argument (not a positive multiple of "
                                   "the block size 512)");
    EXPECT_EQ(msg({.size = 0}), "nbd: size 0: Invalid argument (not a positive multiple of the "
                                "block size 512)");
    EXPECT_EQ(msg({.size = 1 << 20, .nr_queues = 0}),
              "nbd: 0 queues: Invalid argument (one connection per queue, 1 to 64)");
    EXPECT_EQ(msg({.size = 1 << 20, .nr_queues = 65}),
              "nbd: 65 queues: Invalid argument (one connection per queue, 1 to 64)");
    EXPECT_EQ(msg({.size = 1 << 20, .max_io_bytes = 3000}),
              "nbd: --max-io 3000: Invalid argument (the nbd driver takes a multiple of 4K up to "
              "32M)");
    EXPECT_EQ(msg({.size = 1 << 20, .max_io_bytes = 64 << 20}),
              "nbd: --max-io 67108864: Invalid argument (the nbd driver takes a multiple of 4K up "
              "to 32M)");
}

TEST(NbdSetup, DriverFlagsFollowTheFeaturesNotTheServer) {
    const std::uint16_t all = kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagSendTrim |
                              kFlagSendWriteZeroes | kFlagCanMultiConn | kFlagSendCache |
                              kFlagSendFastZero | kFlagSendDf;
    EXPECT_EQ(kernel_flags(all, 0), kFlagHasFlags | kFlagCanMultiConn);
    EXPECT_EQ(kernel_flags(all, USERBLK_F_FLUSH),
              kFlagHasFlags | kFlagCanMultiConn | kFlagSendFlush | kFlagSendFua);
    EXPECT_EQ(kernel_flags(all, USERBLK_F_DISCARD | USERBLK_F_WRITE_ZEROES),
              kFlagHasFlags | kFlagCanMultiConn | kFlagSendTrim | kFlagSendWriteZeroes);
    EXPECT_EQ(kernel_flags(kFlagHasFlags, USERBLK_F_FLUSH | USERBLK_F_DISCARD), kFlagHasFlags)
        << "never more than the server offered";
    EXPECT_EQ(kernel_flags(kFlagHasFlags | kFlagReadOnly, 0), kFlagHasFlags | kFlagReadOnly)
        << "a read-only server stays read-only";
    EXPECT_EQ(kernel_flags(kFlagHasFlags, USERBLK_F_READ_ONLY), kFlagHasFlags | kFlagReadOnly);
}

// --- nbdkit ------------------------------------------------------------------------------------

TEST(Nbdkit, BackendsMapToPlugins) {
    auto ram = nbdkit_command("ram", 256 << 20);
    ASSERT_TRUE(ram.ok());
    EXPECT_EQ(ram.value(),
              (std::vector<std::string>{"nbdkit", "--foreground", "--exit-with-parent", "memory",
                                        "size=268435456", "allocator=malloc"}));
    auto null = nbdkit_command("null", 1 << 20);
    ASSERT_TRUE(null.ok());
    EXPECT_EQ(null.value(),
              (std::vector<std::string>{"nbdkit", "--foreground", "--exit-with-parent", "null",
                                        "size=1048576"}));
    for (const char* other : {"file", "forward", "", "memory"}) {
        auto r = nbdkit_command(other, 1 << 20);
        ASSERT_FALSE(r.ok()) << other;
        EXPECT_EQ(r.status().message(),
                  "nbdkit: backend '" + std::string(other) +
                      "': Invalid argument (nbdkit serves ram (its memory plugin) and null (its "
                      "null plugin))");
    }
}

TEST(Nbdkit, ServesItsBackendsByName) {
    const TransportEntry* e = find_transport("nbdkit");
    auto t = e->make();
    EXPECT_EQ(e->backends, BackendUse::own);
    EXPECT_EQ(describe_transport(*e).get("backend_use"), "own");
    EXPECT_EQ(describe_transport(*e).get("backends"), "null,ram");
    std::vector<std::string> own(e->own_backends.begin(), e->own_backends.end());
    EXPECT_EQ(own, (std::vector<std::string>{"null", "ram"}));
    for (const auto& name : own) {
        EXPECT_NE(find_backend(name), nullptr) << name << " is a registered backend";
    }
    Capabilities caps = describe_transport(*find_transport("nbdkit"));
    EXPECT_EQ(caps.get("kind"), "reference");
    EXPECT_EQ(caps.get("backends"), "null,ram");
    EXPECT_EQ(caps.get("kernel"), "nbd");
    EXPECT_EQ(caps.get("sockets"), "unix,tcp");
}

TEST(Nbdkit, OtherBackendFailsBeforeAnythingStarts) {
    auto t = find_transport("nbdkit")->make();
    Status st = t->create(DeviceConfig{.size = 1 << 20, .backend = "file"}, nullptr);
    EXPECT_EQ(st.error_number(), EINVAL);
    EXPECT_EQ(st.message(), "nbdkit: backend 'file': Invalid argument (nbdkit serves ram (its "
                            "memory plugin) and null (its null plugin))");
    EXPECT_TRUE(t->destroy().ok());
    EXPECT_EQ(t->serve(std::stop_token{}, [](const DeviceInfo&) {}).error_number(), EINVAL);
}

// --- nbd ---------------------------------------------------------------------------------------

/// A backend that does not say multi_conn=1.
class PrivateCacheBackend final : public Backend {
public:
    [[nodiscard]] std::uint64_t size() const noexcept override { return 1 << 20; }
    int read(BackendQueue&, std::uint64_t, std::span<std::byte>) noexcept override { return 0; }
    int write(BackendQueue&, std::uint64_t, std::span<const std::byte>,
              std::uint32_t) noexcept override {
        return 0;
    }
};

TEST(NbdTransport, DescribesItself) {
    Capabilities caps = describe_transport(*find_transport("nbd"));
    EXPECT_EQ(caps.get("kind"), "baseline");
    EXPECT_EQ(caps.get("kernel"), "nbd");
    EXPECT_EQ(caps.get("sockets"), "unix,tcp");
    EXPECT_EQ(caps.get("polling"), "0");
    EXPECT_EQ(caps.get("data_stays_in_kernel"), "0");
    EXPECT_EQ(caps.get("queue_depth"), "128");
    EXPECT_EQ(find_transport("nbd")->backends, BackendUse::object);
    EXPECT_TRUE(find_transport("nbd")->own_backends.empty());
    EXPECT_NE(find_transport("nbd")->remove, nullptr) << "userblk del --transport nbd N";
    EXPECT_NE(find_transport("nbdkit")->remove, nullptr);
}

TEST(NbdTransport, ChecksComeBeforeTheKernel) {
    auto t = find_transport("nbd")->make();
    EXPECT_EQ(t->create(DeviceConfig{.size = 1 << 20}, nullptr).message(),
              "nbd: create failed: Invalid argument (no backend)");
    PrivateCacheBackend b;
    EXPECT_EQ(t->create(DeviceConfig{.size = 1 << 20, .block_size = 3000}, &b).message(),
              "nbd: block size 3000: Invalid argument (the nbd driver takes 512, 1024, 2048 or "
              "4096)");
    EXPECT_EQ(t->create(DeviceConfig{.size = 1 << 20, .nr_queues = 2}, &b).message(),
              "nbd: 2 connections need a backend that is safe for several: Invalid argument (it "
              "does not say multi_conn=1 (--dump-backend): a flush on one connection might not "
              "cover the others; use --queues 1)");
    EXPECT_TRUE(t->destroy().ok());
    EXPECT_EQ(t->serve(std::stop_token{}, [](const DeviceInfo&) {}).message(),
              "nbd: serve failed: Invalid argument (no device was created)");
    EXPECT_EQ(t->stats(), nullptr);
}

TEST(NbdTransport, BackendsSayWhetherTheyAreSafeForSeveralConnections) {
    for (const auto& b : backends()) {
        Capabilities caps = describe_backend(b);
        bool want = b.name != "forward"; // what a remote server caches is not known here
        EXPECT_EQ(caps.get("multi_conn") == "1", want) << b.name;
    }
}

TEST(NbdTransport, AForwardBackendIsSafeForSeveralConnectionsWhenItsServerIs) {
    if (!test::nbdkit_installed()) {
        GTEST_SKIP() << test::kNoNbdkit;
    }
    auto multi_conn = [](const std::vector<std::string>& args) {
        test::Nbdkit server(args);
        auto b = find_backend("forward")->make(BackendConfig{1 << 20, 512, 1, 0, server.options()});
        EXPECT_TRUE(b.ok()) << b.status().message();
        return b.ok() && backend_multi_conn(*b.value());
    };
    EXPECT_TRUE(multi_conn({"memory", "size=1M"})) << "nbdkit memory offers multi-conn";
    EXPECT_FALSE(
        multi_conn({"--filter=multi-conn", "memory", "size=1M", "multi-conn-mode=disable"}))
        << "a cache without multi-conn";
}

TEST(LoopReference, DescribesItself) {
    Capabilities caps = describe_transport(*find_transport("loop"));
    EXPECT_EQ(caps.get("kind"), "reference");
    EXPECT_EQ(caps.get("module"), "loop");
    EXPECT_EQ(caps.get("device"), "/dev/loop<N>");
    EXPECT_EQ(caps.get("data").value_or("").rfind("a file on tmpfs", 0), 0U);
    EXPECT_EQ(find_transport("loop")->backends, BackendUse::none);
    EXPECT_EQ(describe_transport(*find_transport("loop")).get("backend_use"), "none");
}

// --- the CLI -----------------------------------------------------------------------------------

struct CliRun {
    int code = -1;
    std::string err;
};

/// Runs the built CLI with args (stdout to /dev/null, stderr captured).
CliRun run_cli(const std::vector<std::string>& args) {
    test::TempDir dir;
    std::string err_path = dir.file("err");
    pid_t pid = ::fork();
    if (pid == 0) {
        int null = ::open("/dev/null", O_RDWR);
        int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(null, STDIN_FILENO);
        ::dup2(null, STDOUT_FILENO);
        ::dup2(err, STDERR_FILENO);
        std::vector<char*> argv{const_cast<char*>(USERBLK_CLI_PATH)};
        for (const auto& a : args) {
            argv.push_back(const_cast<char*>(a.c_str()));
        }
        argv.push_back(nullptr);
        ::execv(USERBLK_CLI_PATH, argv.data());
        ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    CliRun r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::ifstream f(err_path);
    std::stringstream ss;
    ss << f.rdbuf();
    r.err = ss.str();
    return r;
}

TEST(NbdCli, SocketIsForTransportsWithOne) {
    CliRun bad = run_cli(
        {"add", "--transport", "nbd", "--backend", "ram", "--size", "1M", "--socket", "udp"});
    EXPECT_EQ(bad.code, 2);
    EXPECT_EQ(bad.err, "userblk: invalid --socket 'udp': expected unix or tcp\n");
    CliRun copy = run_cli(
        {"add", "--transport", "copy", "--backend", "ram", "--size", "1M", "--socket", "tcp"});
    EXPECT_EQ(copy.code, 2);
    EXPECT_EQ(copy.err, "userblk: --socket tcp: the copy transport has no socket to a server; "
                        "transports with one: nbd, nbdkit\n");
}

TEST(NbdCli, NbdkitTakesOnlyItsOwnBackendsByName) {
    const std::string want =
        "userblk: --backend: nbdkit serves the backends null, ram itself, without options";
    CliRun none = run_cli({"add", "--transport", "nbdkit", "--size", "1M"});
    EXPECT_EQ(none.code, 2);
    EXPECT_EQ(none.err, want + "\n");
    CliRun file = run_cli({"add", "--transport", "nbdkit", "--backend", "file", "--size", "1M"});
    EXPECT_EQ(file.code, 2);
    EXPECT_EQ(file.err, want + ", not 'file'\n");
    CliRun opts = run_cli({"add", "--transport", "nbdkit", "--backend", "ram:x=1", "--size", "1M"});
    EXPECT_EQ(opts.code, 2);
    EXPECT_EQ(opts.err, want + ", not 'ram:x=1'\n");
}

TEST(NbdCli, LoopTakesNoBackend) {
    CliRun r = run_cli({"add", "--transport", "loop", "--backend", "ram", "--size", "1M"});
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(r.err, "userblk: loop is served by the kernel alone: it takes no --backend\n");
}

} // namespace
