// The pieces of the pipe and splice transports that run without a kernel: pipes sized for a
// request, exact splices, draining, the fd limit, and the descriptor-only serve loop.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include "transports/desc/queue_loop.h"
#include "copy_helpers.h"
#include "core/pipes.h"
#include "transports/pipe/pipe.h"
#include "test_util.h"

namespace {

using namespace userblk;
using namespace userblk::copy;
using test::BatchBuilder;
using test::pattern;

TEST(Pipes, MadeNonBlockingCloseOnExecAndBigEnough) {
    auto p = Pipe::make(std::size_t{1} << 20, "test pipe");
    ASSERT_TRUE(p.ok()) << p.status().message();
    EXPECT_GE(::fcntl(p.value().w.get(), F_GETPIPE_SZ), 1 << 20);
    EXPECT_TRUE(::fcntl(p.value().r.get(), F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(::fcntl(p.value().w.get(), F_GETFD) & FD_CLOEXEC);
}

/// A temporary regular file, removed at once.
unique_fd temp_file() {
    char name[] = "/tmp/userblk-pipes-XXXXXX";
    unique_fd fd(::mkstemp(name));
    ::unlink(name);
    return fd;
}

TEST(Pipes, SpliceExactMovesEveryByteBothWays) {
    auto p = Pipe::make(256 * 1024, "test pipe");
    ASSERT_TRUE(p.ok());
    unique_fd src = temp_file(), dst = temp_file();
    auto data = pattern(192 * 1024, 3);
    ASSERT_EQ(::pwrite(src.get(), data.data(), data.size(), 4096), (ssize_t)data.size());
    loff_t in = 4096, out = 512;
    std::size_t calls = 0;
    ASSERT_EQ(splice_exact(src.get(), &in, p.value().w.get(), nullptr, data.size(), 0, &calls), 0);
    ASSERT_EQ(splice_exact(p.value().r.get(), nullptr, dst.get(), &out, data.size(), 0, &calls), 0);
    EXPECT_EQ(in, 4096 + (loff_t)data.size()) << "the offsets advance";
    EXPECT_EQ(out, 512 + (loff_t)data.size());
    EXPECT_GE(calls, 2U);
    std::vector<std::byte> back(data.size());
    ASSERT_EQ(::pread(dst.get(), back.data(), back.size(), 512), (ssize_t)back.size());
    EXPECT_EQ(back, data);
}

TEST(Pipes, ASourceThatEndsEarlyIsAnIoError) {
    auto p = Pipe::make(64 * 1024, "test pipe");
    ASSERT_TRUE(p.ok());
    unique_fd src = temp_file();
    auto data = pattern(4096, 4);
    ASSERT_EQ(::pwrite(src.get(), data.data(), data.size(), 0), (ssize_t)data.size());
    loff_t in = 0;
    EXPECT_EQ(splice_exact(src.get(), &in, p.value().w.get(), nullptr, 8192, 0, nullptr), -EIO);
    EXPECT_EQ(drain_pipe(p.value().r.get()), 4096) << "what made it into the pipe is dropped";
    EXPECT_EQ(drain_pipe(p.value().r.get()), 0);
    EXPECT_EQ(splice_exact(-1, nullptr, p.value().w.get(), nullptr, 1, 0, nullptr), -EBADF);
}

TEST(Pipes, FdLimitIsRaisedOrRefusedWithTheNumbers) {
    rlimit lim{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
    EXPECT_TRUE(ensure_fd_limit(16, "a few").ok());
    if (lim.rlim_max != RLIM_INFINITY) {
        Status st = ensure_fd_limit(lim.rlim_max + 1, "pipe: 2 queues x 1024 depth");
        ASSERT_FALSE(st.ok());
        EXPECT_NE(st.message().find("pipe: 2 queues x 1024 depth needs"), std::string::npos)
            << st.message();
        EXPECT_NE(st.message().find("hard limit"), std::string::npos) << st.message();
    }
    EXPECT_EQ(pipe_transport_fds(2, 128), 514U);
}

/// Records every write() and applies it whole.
class Sink final : public CompletionSink {
public:
    ssize_t write(std::span<const std::byte> bytes) noexcept override {
        auto part = test::decode(bytes, {});
        all.insert(all.end(), part.begin(), part.end());
        ++calls;
        return static_cast<ssize_t>(bytes.size());
    }
    std::vector<test::Completion> all;
    int calls = 0;
};

/// A descriptor-only queue whose serve() records what it was given.
class FakeDescQueue final : public DescQueue {
public:
    FakeDescQueue(KmodQueue& q, QueueBuffers b) : DescQueue(q, "fake", std::move(b)) {}
    std::vector<userblk_io_desc> served;
    int result = 0;

private:
    int serve(const userblk_io_desc& d) noexcept override {
        served.push_back(d);
        return result;
    }
};

TEST(DescQueue, ServesDescriptorsWithoutInlineDataAndAnswersInOneWrite) {
    test::BackendWithQueue b("null", 1 << 20);
    DeviceInfo info;
    info.nr_queues = 1;
    info.queue_depth = 8;
    info.max_io_bytes = 64 * 1024;
    KmodQueue kq{0, -1, info, *b.backend, *b.queue, b.stats};
    auto bufs = QueueBuffers::allocate(kq, desc_buffer_size(8), "fake");
    ASSERT_TRUE(bufs.ok());
    FakeDescQueue q(kq, std::move(bufs).value());
    BatchBuilder batch; // WRITEs carry no data here: the next entry follows the descriptor
    batch.add(1, USERBLK_OP_WRITE, 0, 65536, {}, 7);
    batch.add(2, USERBLK_OP_READ, 4096, 4096, {}, 8);
    batch.add(3, USERBLK_OP_WRITE, 0, 65536 + 512, {}, 9); // past max_io_bytes
    batch.add(4, USERBLK_OP_FLUSH, 0, 0, {}, 10);
    Sink sink;
    ASSERT_EQ(q.handle_batch(batch.span(), sink).status, BatchStatus::served);
    ASSERT_EQ(q.served.size(), 3U) << "the malformed request is not served";
    EXPECT_EQ(q.served[0].tag, 1);
    EXPECT_EQ(q.served[1].offset, 4096U);
    EXPECT_EQ(q.served[2].op, USERBLK_OP_FLUSH);
    EXPECT_EQ(sink.calls, 1);
    ASSERT_EQ(sink.all.size(), 4U);
    EXPECT_EQ(sink.all[0].cpl.gen, 7U);
    EXPECT_EQ(sink.all[2].cpl.tag, 3);
    EXPECT_EQ(sink.all[2].cpl.result, -EIO);
    EXPECT_EQ(b.stats.protocol_errors.get(), 1U);
    EXPECT_EQ(b.stats.request_batches.count.get(), 1U);

    BatchBuilder trailing;
    trailing.add(5, USERBLK_OP_READ, 0, 512, {}, 11).garbage(8);
    q.result = -ENOSPC;
    ASSERT_EQ(q.handle_batch(trailing.span(), sink).status, BatchStatus::served);
    EXPECT_EQ(sink.all.back().cpl.result, -ENOSPC);
    EXPECT_EQ(b.stats.protocol_errors.get(), 2U) << "the trailing bytes";
}

} // namespace
