// The copy transport's serve loop without a kernel: handle_batch() with a fake completion sink,
// and run() on a SOCK_SEQPACKET socket pair, which keeps read() and write() batches whole as the
// queue fd does.
#include <cerrno>
#include <thread>

#include <gtest/gtest.h>
#include <sys/socket.h>

#include "transports/copy/copy.h"
#include "copy_helpers.h"
#include "core/unique_fd.h"
#include "test_util.h"

namespace {

using namespace userblk;
using namespace userblk::copy;
using test::BatchBuilder;
using test::pattern;

/// Records every write() and applies it whole, or answers with a fixed error.
class RecordingSink final : public CompletionSink {
public:
    ssize_t write(std::span<const std::byte> bytes) noexcept override {
        if (fail_with != 0) {
            return -fail_with;
        }
        calls.emplace_back(bytes.begin(), bytes.end());
        return static_cast<ssize_t>(bytes.size());
    }
    /// All completions written so far.
    std::vector<test::Completion> completions(const std::map<std::uint16_t, std::uint32_t>& reads) {
        std::vector<test::Completion> all;
        for (const auto& c : calls) {
            auto part = test::decode(c, reads);
            all.insert(all.end(), part.begin(), part.end());
        }
        return all;
    }
    std::vector<std::vector<std::byte>> calls;
    int fail_with = 0;
};

/// One copy queue over a backend, with no kernel.
struct Rig {
    DeviceInfo info;
    test::BackendWithQueue b;
    std::unique_ptr<KmodQueue> kq;
    std::unique_ptr<CopyQueue> worker;

    explicit Rig(int fd = -1, std::uint32_t depth = 8, std::uint32_t max_io = 64 * 1024)
        : b("ram", 1 << 20, max_io) {
        info.id = 0;
        info.path = "/dev/userblk0";
        info.size = 1 << 20;
        info.nr_queues = 1;
        info.queue_depth = depth;
        info.max_io_bytes = max_io;
        kq = std::make_unique<KmodQueue>(KmodQueue{0, fd, info, *b.backend, *b.queue, b.stats});
        auto w = CopyQueue::create(*kq);
        if (!w.ok()) {
            ADD_FAILURE() << w.status().message();
            return;
        }
        worker = std::move(w).value();
    }
};

TEST(CopyQueue, WriteThenReadReturnsTheData) {
    Rig rig;
    ASSERT_TRUE(rig.worker);
    auto data = pattern(8192, 1);
    RecordingSink sink;
    BatchBuilder w;
    w.add(1, USERBLK_OP_WRITE, 4096, 8192, data, 100);
    ASSERT_EQ(rig.worker->handle_batch(w.span(), sink).status, BatchStatus::served);
    BatchBuilder r;
    r.add(2, USERBLK_OP_READ, 4096, 8192, {}, 200);
    ASSERT_EQ(rig.worker->handle_batch(r.span(), sink).status, BatchStatus::served);

    auto got = sink.completions({{2, 8192}});
    ASSERT_EQ(got.size(), 2U);
    EXPECT_EQ(got[0].cpl.tag, 1);
    EXPECT_EQ(got[0].cpl.gen, 100U);
    EXPECT_EQ(got[0].cpl.result, 0);
    EXPECT_EQ(got[1].cpl.tag, 2);
    EXPECT_EQ(got[1].cpl.gen, 200U);
    EXPECT_EQ(got[1].cpl.result, 0);
    EXPECT_EQ(got[1].data, data);
    EXPECT_EQ(sink.calls.size(), 2U); // one write() per batch
}

TEST(CopyQueue, OneBatchRunsInOrderAndAnswersInOneWrite) {
    Rig rig;
    ASSERT_TRUE(rig.worker);
    auto data = pattern(4096, 2);
    RecordingSink sink;
    BatchBuilder b;
    b.add(0, USERBLK_OP_WRITE, 0, 4096, data)
        .add(1, USERBLK_OP_READ, 0, 4096)
        .add(2, USERBLK_OP_WRITE_ZEROES, 0, 4096)
        .add(3, USERBLK_OP_READ, 0, 4096)
        .add(4, USERBLK_OP_FLUSH, 0, 0);
    ASSERT_EQ(rig.worker->handle_batch(b.span(), sink).status, BatchStatus::served);
    ASSERT_EQ(sink.calls.size(), 1U);
    auto got = sink.completions({{1, 4096}, {3, 4096}});
    ASSERT_EQ(got.size(), 5U);
    for (std::uint16_t t = 0; t < 5; ++t) {
        EXPECT_EQ(got[t].cpl.tag, t);
        EXPECT_EQ(got[t].cpl.result, 0) << "tag " << t;
    }
    EXPECT_EQ(got[1].data, data);
    EXPECT_TRUE(test::all_zero(got[3].data));
    EXPECT_EQ(got[3].data.size(), 4096U);

    StatsSnapshot s = rig.b.stats.snapshot();
    EXPECT_EQ(s.request_batches.count, 1U);
    EXPECT_EQ(s.request_batches.entries, 5U);
    EXPECT_EQ(s.completion_batches.count, 1U);
    EXPECT_EQ(s.completion_batches.entries, 5U);
    EXPECT_EQ(s.write_calls, 1U);
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::read)], 2U);
    EXPECT_EQ(s.user_data_bytes, 3U * 4096); // one WRITE in, two READs out
}

TEST(CopyQueue, BackendErrorsBecomeResultsWithoutData) {
    Rig rig;
    ASSERT_TRUE(rig.worker);
    RecordingSink sink;
    BatchBuilder b;
    b.add(1, USERBLK_OP_READ, (1 << 20) - 512, 4096) // past the end
        .add(2, 42, 0, 512)                          // unknown op
        .add(3, USERBLK_OP_READ, 0, 512);
    ASSERT_EQ(rig.worker->handle_batch(b.span(), sink).status, BatchStatus::served);
    auto got = sink.completions({{1, 4096}, {3, 512}});
    ASSERT_EQ(got.size(), 3U);
    EXPECT_EQ(got[0].cpl.result, -EINVAL);
    EXPECT_TRUE(got[0].data.empty());
    EXPECT_EQ(got[1].cpl.result, -EOPNOTSUPP);
    EXPECT_EQ(got[2].cpl.result, 0);
    EXPECT_EQ(got[2].data.size(), 512U);
    EXPECT_EQ(rig.b.stats.io_errors.get(), 2U);
    EXPECT_EQ(rig.b.stats.user_data_bytes.get(), 512U); // failed READs send no data
    EXPECT_EQ(rig.b.stats.protocol_errors.get(), 0U);
}

TEST(CopyQueue, MalformedEntriesAreFailedAndCounted) {
    Rig rig(-1, 8, 4096);
    ASSERT_TRUE(rig.worker);
    RecordingSink sink;
    auto data = pattern(8192, 3);
    BatchBuilder b;
    b.add(1, USERBLK_OP_READ, 0, 512).add(2, USERBLK_OP_WRITE, 0, 8192, data); // > max_io
    ASSERT_EQ(rig.worker->handle_batch(b.span(), sink).status, BatchStatus::served);
    auto got = sink.completions({{1, 512}});
    ASSERT_EQ(got.size(), 2U);
    EXPECT_EQ(got[0].cpl.result, 0);
    EXPECT_EQ(got[1].cpl.tag, 2);
    EXPECT_EQ(got[1].cpl.result, -EIO);
    EXPECT_EQ(rig.b.stats.protocol_errors.get(), 1U);

    BatchBuilder t;
    t.add(5, USERBLK_OP_FLUSH, 0, 0).garbage(7);
    ASSERT_EQ(rig.worker->handle_batch(t.span(), sink).status, BatchStatus::served);
    EXPECT_EQ(rig.b.stats.protocol_errors.get(), 2U);
    auto all = sink.completions({{1, 512}});
    ASSERT_EQ(all.size(), 3U);
    EXPECT_EQ(all[2].cpl.tag, 5); // what came before the garbage is answered
}

TEST(CopyQueue, LargeReadsSpillIntoSeveralWrites) {
    constexpr std::uint32_t kMaxIo = 64 * 1024;
    Rig rig(-1, 8, kMaxIo);
    ASSERT_TRUE(rig.worker);
    RecordingSink sink;
    BatchBuilder b;
    std::map<std::uint16_t, std::uint32_t> reads;
    for (std::uint16_t t = 0; t < 8; ++t) {
        auto data = pattern(kMaxIo, t);
        ASSERT_EQ(rig.b.backend->write(*rig.b.queue, std::uint64_t{t} * kMaxIo, data, 0), 0);
        b.add(t, USERBLK_OP_READ, std::uint64_t{t} * kMaxIo, kMaxIo);
        reads[t] = kMaxIo;
    }
    ASSERT_EQ(rig.worker->handle_batch(b.span(), sink).status, BatchStatus::served);
    EXPECT_GT(sink.calls.size(), 1U);
    auto got = sink.completions(reads);
    ASSERT_EQ(got.size(), 8U);
    for (std::uint16_t t = 0; t < 8; ++t) {
        EXPECT_EQ(got[t].cpl.tag, t);
        EXPECT_EQ(got[t].data, pattern(kMaxIo, t)) << "tag " << t;
    }
    StatsSnapshot s = rig.b.stats.snapshot();
    EXPECT_EQ(s.request_batches.count, 1U);
    EXPECT_EQ(s.completion_batches.count, sink.calls.size());
    EXPECT_EQ(s.completion_batches.entries, 8U);
}

TEST(CopyQueue, DeadDeviceEndsTheBatch) {
    Rig rig;
    ASSERT_TRUE(rig.worker);
    RecordingSink sink;
    sink.fail_with = ENODEV;
    BatchBuilder b;
    b.add(1, USERBLK_OP_FLUSH, 0, 0);
    EXPECT_EQ(rig.worker->handle_batch(b.span(), sink).status, BatchStatus::device_gone);
}

TEST(CopyQueue, RunFailsClearlyOnABadFd) {
    Rig rig(-1);
    ASSERT_TRUE(rig.worker);
    Status st = rig.worker->run(std::stop_token{});
    EXPECT_EQ(st.message(), "copy: queue 0: read failed: Bad file descriptor");
}

std::vector<std::byte> recv_message(int fd) {
    std::vector<std::byte> buf(1 << 20);
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    buf.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return buf;
}

// The whole loop: read() a batch, answer it with one write(), end cleanly at end of file.
TEST(CopyQueue, RunServesUntilEndOfFile) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    unique_fd daemon_end(sv[0]);
    unique_fd kernel_end(sv[1]);
    Rig rig(daemon_end.get());
    ASSERT_TRUE(rig.worker);
    Status result = Status::from_errno(EINPROGRESS, "not finished");
    std::jthread loop([&] { result = rig.worker->run(std::stop_token{}); });

    auto data = pattern(4096, 9);
    BatchBuilder b;
    b.add(1, USERBLK_OP_WRITE, 8192, 4096, data, 5).add(2, USERBLK_OP_READ, 8192, 4096, {}, 6);
    ASSERT_EQ(::send(kernel_end.get(), b.bytes.data(), b.bytes.size(), 0),
              static_cast<ssize_t>(b.bytes.size()));
    auto answer = recv_message(kernel_end.get());
    auto got = test::decode(answer, {{2, 4096}});
    ASSERT_EQ(got.size(), 2U);
    EXPECT_EQ(got[0].cpl.tag, 1);
    EXPECT_EQ(got[0].cpl.gen, 5U);
    EXPECT_EQ(got[1].cpl.gen, 6U);
    EXPECT_EQ(got[1].data, data);

    kernel_end.reset(); // the device is gone: read() returns 0
    loop.join();
    EXPECT_TRUE(result.ok()) << result.message();
    StatsSnapshot s = rig.b.stats.snapshot();
    EXPECT_EQ(s.read_calls, 2U);
    EXPECT_EQ(s.write_calls, 1U);
    EXPECT_EQ(s.request_batches.entries, 2U);
}

} // namespace
