// Backends: every registered one, null and ram, the default Backend members, and the shared pipe
// adapter. The file and forward backends have their own files.
#include <atomic>
#include <cerrno>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "backend_fixtures.h"
#include "core/io.h"
#include "core/unique_fd.h"
#include "test_util.h"

namespace {

using namespace userblk;
using test::all_zero;
using test::BackendWithQueue;
using test::pattern;

constexpr std::uint64_t kMiB = 1 << 20;

// --- every registered backend ---------------------------------------------------------------

class EveryBackend : public ::testing::TestWithParam<std::string_view> {};

TEST_P(EveryBackend, ReportsItsSize) {
    test::ReadyBackend ready(GetParam(), 3 * kMiB);
    if (!ready.fixture.skip.empty()) {
        GTEST_SKIP() << ready.fixture.skip;
    }
    BackendWithQueue& b = *ready.made;
    ASSERT_TRUE(b.queue);
    EXPECT_EQ(b.backend->size(), 3 * kMiB);
}

TEST_P(EveryBackend, RejectsRangesPastTheEnd) {
    test::ReadyBackend ready(GetParam(), kMiB);
    if (!ready.fixture.skip.empty()) {
        GTEST_SKIP() << ready.fixture.skip;
    }
    BackendWithQueue& b = *ready.made;
    ASSERT_TRUE(b.queue);
    std::vector<std::byte> buf(4096);
    EXPECT_EQ(b.backend->read(*b.queue, kMiB - 2048, buf), -EINVAL);
    EXPECT_EQ(b.backend->write(*b.queue, kMiB, buf, 0), -EINVAL);
    EXPECT_EQ(b.backend->write(*b.queue, UINT64_MAX - 1000, buf, 0), -EINVAL);
    EXPECT_EQ(b.backend->read(*b.queue, kMiB - 4096, buf), 0);
}

TEST_P(EveryBackend, ZeroLengthIoAtTheEndIsFine) {
    test::ReadyBackend ready(GetParam(), kMiB);
    if (!ready.fixture.skip.empty()) {
        GTEST_SKIP() << ready.fixture.skip;
    }
    BackendWithQueue& b = *ready.made;
    ASSERT_TRUE(b.queue);
    EXPECT_EQ(b.backend->read(*b.queue, kMiB, {}), 0);
    EXPECT_EQ(b.backend->write(*b.queue, kMiB, {}, 0), 0);
}

TEST_P(EveryBackend, RejectsAnOptionItDoesNotTake) {
    const BackendEntry* entry = find_backend(GetParam());
    ASSERT_NE(entry, nullptr);
    auto made = entry->make(BackendConfig{kMiB, 512, 1, 0, {{"bogus", "1"}}});
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().error_number(), EINVAL);
    EXPECT_NE(made.status().message().find("unknown option 'bogus'"), std::string::npos)
        << made.status().message();
    EXPECT_NE(made.status().message().find(std::string(GetParam()) + " takes"), std::string::npos)
        << made.status().message();
}

// The pipe path moves the data either natively (it never enters the daemon's memory: nothing
// counted) or through the shared adapter (every byte counted): native_pipe() says which.
TEST_P(EveryBackend, PipePathCountsAdapterBytesUnlessNative) {
    test::ReadyBackend ready(GetParam(), kMiB);
    if (!ready.fixture.skip.empty()) {
        GTEST_SKIP() << ready.fixture.skip;
    }
    BackendWithQueue& b = *ready.made;
    ASSERT_TRUE(b.queue);
    auto data = pattern(8192, 12);
    test::Pipe p;
    ASSERT_TRUE(test::write_all(p.w.get(), data));
    ASSERT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 16384, 8192, 0), 0);
    ASSERT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), 16384, 8192), 0);
    EXPECT_EQ(test::read_n(p.r.get(), 8192).size(), 8192U);
    std::uint64_t want = b.backend->native_pipe() ? 0 : 2 * 8192;
    EXPECT_EQ(b.stats.adapter_copied_bytes.get(), want);
    EXPECT_EQ(b.stats.user_data_bytes.get(), want);
}

// What serves() claims is what the calls do: a device offers exactly these features by default,
// so a claim the calls do not keep would reach fio or a file system as an I/O error.
TEST_P(EveryBackend, ServesWhatItsCallsDo) {
    test::ReadyBackend ready(GetParam(), kMiB);
    if (!ready.fixture.skip.empty()) {
        GTEST_SKIP() << ready.fixture.skip;
    }
    BackendWithQueue& b = *ready.made;
    ASSERT_TRUE(b.queue);
    BackendServes s = b.backend->serves();
    auto data = pattern(8192, 13);
    EXPECT_EQ(b.backend->write(*b.queue, 0, data, 0) == 0, s.write);
    if (s.write) {
        EXPECT_EQ(b.backend->write(*b.queue, 8192, data, USERBLK_IO_F_FUA), 0);
        EXPECT_EQ(b.backend->flush(*b.queue), 0);
        EXPECT_EQ(b.backend->discard(*b.queue, 4096, 4096), s.discard ? 0 : -EOPNOTSUPP);
        EXPECT_EQ(b.backend->write_zeroes(*b.queue, 12288, 4096) == 0, s.write_zeroes);
    }
    std::uint64_t f = default_features(s);
    EXPECT_TRUE(check_features(f, s, GetParam()).ok()) << check_features(f, s, GetParam()).message();
}

std::vector<std::string_view> backend_names_list() {
    std::vector<std::string_view> names;
    for (const auto& e : backends()) {
        names.push_back(e.name);
    }
    return names;
}

INSTANTIATE_TEST_SUITE_P(Registry, EveryBackend, ::testing::ValuesIn(backend_names_list()),
                         [](const auto& param_info) { return std::string(param_info.param); });

// --- null ---------------------------------------------------------------------------------

TEST(NullBackend, ReadsZeroFillAndWritesAreDropped) {
    BackendWithQueue b("null", kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(4096, 3);
    EXPECT_EQ(b.backend->write(*b.queue, 0, data, USERBLK_IO_F_FUA), 0);
    std::vector<std::byte> buf(4096, std::byte{0xaa});
    EXPECT_EQ(b.backend->read(*b.queue, 0, buf), 0);
    EXPECT_TRUE(all_zero(buf));
    EXPECT_EQ(b.backend->flush(*b.queue), 0);
    EXPECT_EQ(b.backend->discard(*b.queue, 0, 4096), 0);
    EXPECT_EQ(b.backend->write_zeroes(*b.queue, 0, 4096), 0);
    EXPECT_EQ(b.backend->discard(*b.queue, kMiB, 4096), -EINVAL);
}

TEST(NullBackend, FillNoneLeavesTheReadBufferAsItIs) {
    BackendWithQueue b("null", kMiB, 64 * 1024, {{"fill", "none"}});
    ASSERT_TRUE(b.queue);
    std::vector<std::byte> buf(4096, std::byte{0xaa});
    EXPECT_EQ(b.backend->read(*b.queue, 0, buf), 0);
    EXPECT_EQ(std::count(buf.begin(), buf.end(), std::byte{0xaa}), 4096);
    EXPECT_EQ(b.backend->read(*b.queue, kMiB, buf), -EINVAL);
    Capabilities caps;
    b.backend->describe(caps);
    EXPECT_EQ(caps.get("read"), "untouched");
}

TEST(NullBackend, FillTakesZeroOrNone) {
    const BackendEntry* entry = find_backend("null");
    ASSERT_NE(entry, nullptr);
    auto zero = entry->make(BackendConfig{kMiB, 512, 1, 4096, {{"fill", "zero"}}});
    ASSERT_TRUE(zero.ok()) << zero.status().message();
    Capabilities caps;
    zero.value()->describe(caps);
    EXPECT_EQ(caps.get("read"), "zero-fill");
    auto bad = entry->make(BackendConfig{kMiB, 512, 1, 4096, {{"fill", "ones"}}});
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().error_number(), EINVAL);
    EXPECT_NE(bad.status().message().find("fill=ones is not a fill"), std::string::npos)
        << bad.status().message();
}

// --- ram ------------------------------------------------------------------------------------

TEST(RamBackend, UntouchedReadsAsZero) {
    BackendWithQueue b("ram", 8 * kMiB);
    ASSERT_TRUE(b.queue);
    std::vector<std::byte> buf(std::size_t{64} * 1024, std::byte{0x55});
    EXPECT_EQ(b.backend->read(*b.queue, 5 * kMiB, buf), 0);
    EXPECT_TRUE(all_zero(buf));
}

TEST(RamBackend, ReadAfterWrite) {
    BackendWithQueue b("ram", 8 * kMiB);
    ASSERT_TRUE(b.queue);
    auto a = pattern(8192, 1);
    auto c = pattern(512, 2);
    ASSERT_EQ(b.backend->write(*b.queue, 4096, a, 0), 0);
    ASSERT_EQ(b.backend->write(*b.queue, 4096 + 1024, c, 0), 0); // overwrite inside
    std::vector<std::byte> back(8192);
    ASSERT_EQ(b.backend->read(*b.queue, 4096, back), 0);
    auto expect = a;
    std::memcpy(expect.data() + 1024, c.data(), c.size());
    EXPECT_EQ(back, expect);
    // The last block of the device works too.
    ASSERT_EQ(b.backend->write(*b.queue, 8 * kMiB - 512, c, 0), 0);
    std::vector<std::byte> last(512);
    ASSERT_EQ(b.backend->read(*b.queue, 8 * kMiB - 512, last), 0);
    EXPECT_EQ(last, c);
}

/// Fills [0, 64K) with a pattern, zeroes [off, off+len) with op, and checks exactly that range
/// reads as zero.
void check_zero_range(bool discard, std::uint64_t off, std::uint64_t len) {
    BackendWithQueue b("ram", kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(std::size_t{64} * 1024, 9);
    ASSERT_EQ(b.backend->write(*b.queue, 0, data, 0), 0);
    int r = discard ? b.backend->discard(*b.queue, off, len)
                    : b.backend->write_zeroes(*b.queue, off, len);
    ASSERT_EQ(r, 0);
    std::vector<std::byte> back(data.size());
    ASSERT_EQ(b.backend->read(*b.queue, 0, back), 0);
    for (std::size_t i = 0; i < back.size(); ++i) {
        std::byte want = (i >= off && i < off + len) ? std::byte{0} : data[i];
        ASSERT_EQ(back[i], want) << "byte " << i << " after zeroing [" << off << ", " << off + len
                                 << ")";
    }
}

TEST(RamBackend, DiscardZeroesWholePages) {
    check_zero_range(true, 8192, 16384);
}
TEST(RamBackend, DiscardZeroesPartialPages) {
    check_zero_range(true, 512, 3 * 4096 + 1024);
}
TEST(RamBackend, DiscardInsideOnePage) {
    check_zero_range(true, 4096 + 512, 1024);
}
TEST(RamBackend, WriteZeroesZeroesTheRange) {
    check_zero_range(false, 1536, 20000);
}

TEST(RamBackend, DiscardAndWriteZeroesCheckBounds) {
    BackendWithQueue b("ram", kMiB);
    ASSERT_TRUE(b.queue);
    EXPECT_EQ(b.backend->discard(*b.queue, kMiB - 512, 1024), -EINVAL);
    EXPECT_EQ(b.backend->write_zeroes(*b.queue, UINT64_MAX, 2), -EINVAL);
}

TEST(RamBackend, ConcurrentQueuesSeeTheirOwnWrites) {
    constexpr unsigned kQueues = 4;
    constexpr std::uint64_t kRegion = kMiB;
    auto made = find_backend("ram")->make(BackendConfig{kQueues * kRegion, 512, kQueues, 0, {}});
    ASSERT_TRUE(made.ok());
    std::unique_ptr<Backend> ram = std::move(made).value();
    DeviceStats stats(kQueues);
    std::vector<BackendQueue> queues;
    for (unsigned i = 0; i < kQueues; ++i) {
        auto q = BackendQueue::open(*ram, i, 64 * 1024, stats.queue(i));
        ASSERT_TRUE(q.ok());
        queues.push_back(std::move(q).value());
    }
    std::atomic<unsigned> failures{0};
    std::vector<std::jthread> threads;
    for (unsigned i = 0; i < kQueues; ++i) {
        threads.emplace_back([&, i] {
            BackendQueue& q = queues[i];
            std::vector<std::byte> back(4096);
            for (unsigned round = 0; round < 200; ++round) {
                std::uint64_t off = i * kRegion + (round % 256) * std::uint64_t{4096};
                auto data = pattern(4096, i * 1000 + round);
                if (ram->write(q, off, data, 0) != 0 || ram->read(q, off, back) != 0 ||
                    back != data) {
                    failures.fetch_add(1);
                }
            }
        });
    }
    threads.clear(); // join
    EXPECT_EQ(failures.load(), 0U);
    // Every queue's last writes are intact at the end: no queue wrote over another's region.
    for (unsigned i = 0; i < kQueues; ++i) {
        for (unsigned round = 200 - 56; round < 200; ++round) {
            std::vector<std::byte> back(4096);
            ASSERT_EQ(ram->read(queues[0], i * kRegion + (round % 256) * std::uint64_t{4096}, back),
                      0);
            EXPECT_EQ(back, pattern(4096, i * 1000 + round)) << "queue " << i << " round " << round;
        }
    }
}

TEST(RamBackend, LargeDeviceIsReservedLazily) {
    std::ifstream overcommit("/proc/sys/vm/overcommit_memory");
    int mode = 0;
    overcommit >> mode;
    if (mode == 2) {
        GTEST_SKIP() << "vm.overcommit_memory=2 ignores MAP_NORESERVE";
    }
    constexpr std::uint64_t kSize = 64ULL << 30; // more than this machine's memory
    BackendWithQueue b("ram", kSize);
    ASSERT_TRUE(b.queue);
    auto data = pattern(4096, 5);
    ASSERT_EQ(b.backend->write(*b.queue, kSize - 4096, data, 0), 0);
    std::vector<std::byte> back(4096);
    ASSERT_EQ(b.backend->read(*b.queue, kSize - 4096, back), 0);
    EXPECT_EQ(back, data);
}

// --- the defaults of Backend ------------------------------------------------------------------

/// Only the required members: records what write() received.
class RecordingBackend final : public Backend {
public:
    [[nodiscard]] std::uint64_t size() const noexcept override { return kMiB; }
    int read(BackendQueue& /*q*/, std::uint64_t /*off*/,
             std::span<std::byte> dst) noexcept override {
        std::memset(dst.data(), 0x11, dst.size());
        return 0;
    }
    int write(BackendQueue& /*q*/, std::uint64_t off, std::span<const std::byte> src,
              std::uint32_t /*flags*/) noexcept override {
        writes.emplace_back(off, src.size());
        if (!all_zero(src)) {
            nonzero = true;
        }
        return 0;
    }
    std::vector<std::pair<std::uint64_t, std::size_t>> writes;
    bool nonzero = false;
};

TEST(BackendDefaults, FlushSucceedsDiscardIsNotSupported) {
    RecordingBackend rb;
    QueueStats stats;
    auto q = BackendQueue::open(rb, 0, 4096, stats);
    ASSERT_TRUE(q.ok());
    EXPECT_EQ(rb.flush(q.value()), 0);
    EXPECT_EQ(rb.discard(q.value(), 0, 4096), -EOPNOTSUPP);
}

TEST(BackendDefaults, ServeWritesAndWriteZeroesButNoDiscardAndHaveNoCache) {
    RecordingBackend rb;
    BackendServes s = rb.serves();
    EXPECT_TRUE(s.write);
    EXPECT_FALSE(s.cache);
    EXPECT_FALSE(s.discard);
    EXPECT_TRUE(s.write_zeroes);
    EXPECT_EQ(default_features(s), USERBLK_F_WRITE_ZEROES);
}

// --- features over a backend ---------------------------------------------------------------

TEST(BackendFeatures, DefaultsAreWhatTheBackendServes) {
    EXPECT_EQ(default_features({.write = true, .cache = true, .discard = true}),
              USERBLK_F_FLUSH | USERBLK_F_FUA | USERBLK_F_DISCARD | USERBLK_F_WRITE_ZEROES);
    EXPECT_EQ(default_features({.write = true, .cache = false, .discard = false}),
              USERBLK_F_WRITE_ZEROES);
    EXPECT_EQ(default_features({.write = true, .cache = true, .discard = false,
                                .write_zeroes = false}),
              USERBLK_F_FLUSH | USERBLK_F_FUA);
    // Nothing but read-only means anything on a device that takes no writes.
    EXPECT_EQ(default_features({.write = false, .cache = true, .discard = true}),
              USERBLK_F_READ_ONLY);
}

TEST(BackendFeatures, FlushAndFuaWithoutACacheAreAccepted) {
    BackendServes none{.write = true, .cache = false, .discard = false};
    EXPECT_TRUE(check_features(USERBLK_F_FLUSH | USERBLK_F_FUA, none, "x").ok());
    EXPECT_TRUE(check_features(USERBLK_F_READ_ONLY | USERBLK_F_ANY_DAEMON, none, "x").ok());
    EXPECT_TRUE(check_features(0, none, "x").ok());
}

TEST(BackendFeatures, WhatTheBackendCannotServeIsRefusedByName) {
    BackendServes s{.write = true, .cache = true, .discard = false};
    Status st = check_features(USERBLK_F_FLUSH | USERBLK_F_DISCARD, s, "forward");
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error_number(), EOPNOTSUPP);
    EXPECT_EQ(st.message(), "--features discard: Operation not supported (backend 'forward' "
                            "cannot serve it; it serves flush,write-zeroes,fua, which is what a "
                            "device gets without --features)");
    BackendServes nz{.write = true, .cache = false, .discard = true, .write_zeroes = false};
    st = check_features(USERBLK_F_WRITE_ZEROES | USERBLK_F_DISCARD, nz, "b");
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("--features write-zeroes:"), std::string::npos) << st.message();
}

TEST(BackendFeatures, ABackendThatTakesNoWritesNeedsAReadOnlyDevice) {
    BackendServes ro{.write = false};
    Status st = check_features(USERBLK_F_FLUSH, ro, "forward");
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error_number(), EROFS);
    EXPECT_EQ(st.message(), "--features flush: Read-only file system (backend 'forward' takes "
                            "no writes: the device must be read-only)");
    EXPECT_TRUE(check_features(USERBLK_F_READ_ONLY, ro, "forward").ok());
}

TEST(BackendDefaults, WriteZeroesWritesZeroChunks) {
    RecordingBackend rb;
    QueueStats stats;
    auto q = BackendQueue::open(rb, 0, 4096, stats);
    ASSERT_TRUE(q.ok());
    ASSERT_EQ(rb.write_zeroes(q.value(), 4096, std::uint64_t{200} * 1024), 0);
    EXPECT_FALSE(rb.nonzero);
    std::uint64_t covered = 0;
    std::uint64_t next = 4096;
    for (auto [off, len] : rb.writes) {
        EXPECT_EQ(off, next);
        next += len;
        covered += len;
    }
    EXPECT_EQ(covered, 200U * 1024);
    EXPECT_GT(rb.writes.size(), 1U); // chunked, not one huge write
}

// --- the pipe adapter --------------------------------------------------------------------------

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

std::vector<std::byte> read_exactly(int fd, std::size_t n) {
    std::vector<std::byte> out(n);
    std::size_t done = 0;
    while (done < n) {
        ssize_t r = ::read(fd, out.data() + done, n - done);
        if (r <= 0) {
            out.resize(done);
            break;
        }
        done += static_cast<std::size_t>(r);
    }
    return out;
}

TEST(PipeAdapter, ReadToPipeCopiesAndCounts) {
    BackendWithQueue b("ram", kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(16384, 4);
    ASSERT_EQ(b.backend->write(*b.queue, 65536, data, 0), 0);
    Pipe p;
    ASSERT_TRUE(p.r.valid());
    ASSERT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), 65536, 16384), 0);
    EXPECT_EQ(read_exactly(p.r.get(), 16384), data);
    EXPECT_EQ(b.stats.adapter_copied_bytes.get(), 16384U);
}

TEST(PipeAdapter, WriteFromPipeStoresAndCounts) {
    BackendWithQueue b("ram", kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(8192, 6);
    Pipe p;
    ASSERT_EQ(::write(p.w.get(), data.data(), data.size()), 8192);
    ASSERT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 4096, 8192, 0), 0);
    std::vector<std::byte> back(8192);
    ASSERT_EQ(b.backend->read(*b.queue, 4096, back), 0);
    EXPECT_EQ(back, data);
    EXPECT_EQ(b.stats.adapter_copied_bytes.get(), 8192U);
}

TEST(PipeAdapter, ShortPipeIsAnIoErrorAndNothingIsWritten) {
    BackendWithQueue b("ram", kMiB);
    ASSERT_TRUE(b.queue);
    Pipe p;
    auto data = pattern(1000, 7);
    ASSERT_EQ(::write(p.w.get(), data.data(), data.size()), 1000);
    p.w.reset(); // end of file after 1000 bytes
    EXPECT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 0, 4096, 0), -EIO);
    std::vector<std::byte> back(4096);
    ASSERT_EQ(b.backend->read(*b.queue, 0, back), 0);
    EXPECT_TRUE(all_zero(back));
    EXPECT_EQ(b.stats.adapter_copied_bytes.get(), 0U);
}

TEST(PipeAdapter, LongerThanTheBufferIsRejected) {
    BackendWithQueue b("ram", kMiB, 4096);
    ASSERT_TRUE(b.queue);
    Pipe p;
    EXPECT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), 0, 8192), -EINVAL);
}

TEST(PipeAdapter, WaitsOnAFullNonBlockingPipe) {
    constexpr std::uint32_t kLen = 256 * 1024; // several times a pipe's default capacity
    BackendWithQueue b("ram", kMiB, kLen);
    ASSERT_TRUE(b.queue);
    auto data = pattern(kLen, 8);
    ASSERT_EQ(b.backend->write(*b.queue, 0, data, 0), 0);
    Pipe p(O_NONBLOCK);
    std::vector<std::byte> got;
    std::jthread reader([&] {
        int flags = ::fcntl(p.r.get(), F_GETFL);
        ::fcntl(p.r.get(), F_SETFL, flags & ~O_NONBLOCK);
        got = read_exactly(p.r.get(), kLen);
    });
    ASSERT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), 0, kLen), 0);
    reader.join();
    EXPECT_EQ(got, data);
    EXPECT_EQ(b.stats.adapter_copied_bytes.get(), kLen);
}

TEST(ExecutePipe, MovesDataThroughTheBackendPipePath) {
    BackendWithQueue b("ram", kMiB);
    ASSERT_TRUE(b.queue);
    auto data = pattern(4096, 10);
    Pipe p;
    ASSERT_EQ(::write(p.w.get(), data.data(), data.size()), 4096);
    userblk_io_desc d{};
    d.op = USERBLK_OP_WRITE;
    d.offset = 12288;
    d.len = 4096;
    ASSERT_EQ(execute_pipe(*b.backend, *b.queue, d, p.r.get()), 0);
    d.op = USERBLK_OP_READ;
    ASSERT_EQ(execute_pipe(*b.backend, *b.queue, d, p.w.get()), 0);
    EXPECT_EQ(read_exactly(p.r.get(), 4096), data);
    d.offset = kMiB;
    EXPECT_EQ(execute_pipe(*b.backend, *b.queue, d, p.w.get()), -EINVAL);
    StatsSnapshot s = b.stats.snapshot();
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::read)], 2U);
    EXPECT_EQ(s.io_errors, 1U);
    EXPECT_EQ(s.adapter_copied_bytes, 8192U);
}

} // namespace
