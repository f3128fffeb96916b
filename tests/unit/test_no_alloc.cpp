// "Hot loops allocate nothing": counts heap allocations made while the copy and ring transports
// handle batches, our NBD server serves requests, and the backends run I/O. Replaces the global
// operator new of this test binary (it only counts, then allocates as usual).
#include <atomic>
#include <cstdlib>
#include <new>

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <thread>

#include "nbd/client.h"
#include "transports/copy/copy.h"
#include "copy_helpers.h"
#include "core/io.h"
#include "nbd/server.h"
#include "transports/ring/ring.h"
#include "ring_fake.h"
#include "test_util.h"

namespace {

std::atomic<std::uint64_t> g_allocations{0};

void* counted_alloc(std::size_t size, std::size_t align) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (size == 0) {
        size = 1;
    }
    void* p = align <= alignof(std::max_align_t)
                  ? std::malloc(size)
                  : std::aligned_alloc(align, (size + align - 1) / align * align);
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    return p;
}

} // namespace

// The replaceable global allocation functions; the default deletes free() what these return.
void* operator new(std::size_t size) {
    return counted_alloc(size, 0);
}
void* operator new[](std::size_t size) {
    return counted_alloc(size, 0);
}
void* operator new(std::size_t size, std::align_val_t align) {
    return counted_alloc(size, static_cast<std::size_t>(align));
}
void* operator new[](std::size_t size, std::align_val_t align) {
    return counted_alloc(size, static_cast<std::size_t>(align));
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t /*size*/) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t /*size*/) noexcept {
    std::free(p);
}
void operator delete(void* p, std::align_val_t /*align*/) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::align_val_t /*align*/) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t /*size*/, std::align_val_t /*align*/) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t /*size*/, std::align_val_t /*align*/) noexcept {
    std::free(p);
}

namespace {

using namespace userblk;
using namespace userblk::copy;

/// Accepts every write() without keeping anything.
class DiscardSink final : public CompletionSink {
public:
    ssize_t write(std::span<const std::byte> bytes) noexcept override {
        return static_cast<ssize_t>(bytes.size());
    }
};

TEST(NoAllocation, CountingWorks) {
    std::uint64_t before = g_allocations.load();
    auto p = std::make_unique<int>(3);
    EXPECT_EQ(*p, 3);
    EXPECT_GT(g_allocations.load(), before) << "the counter does not see allocations";
}

TEST(NoAllocation, CopyQueueHandlesBatchesWithoutAllocating) {
    test::BackendWithQueue b("ram", 1 << 20);
    ASSERT_TRUE(b.queue);
    DeviceInfo info;
    info.size = 1 << 20;
    info.queue_depth = 16;
    info.max_io_bytes = 64 * 1024;
    KmodQueue kq{0, -1, info, *b.backend, *b.queue, b.stats};
    auto worker = CopyQueue::create(kq);
    ASSERT_TRUE(worker.ok());
    auto data = test::pattern(4096, 1);
    test::BatchBuilder batch;
    for (std::uint16_t t = 0; t < 16; t += 4) {
        batch.add(t, USERBLK_OP_WRITE, t * 4096ULL, 4096, data)
            .add(t + 1, USERBLK_OP_READ, t * 4096ULL, 4096)
            .add(t + 2, USERBLK_OP_FLUSH, 0, 0)
            .add(t + 3, USERBLK_OP_DISCARD, 65536, 4096);
    }
    DiscardSink sink;
    std::uint64_t before = g_allocations.load();
    for (int round = 0; round < 100; ++round) {
        ASSERT_EQ(worker.value()->handle_batch(batch.span(), sink).status, BatchStatus::served);
    }
    EXPECT_EQ(g_allocations.load(), before);
    EXPECT_EQ(b.stats.requests[static_cast<std::size_t>(OpKind::read)].get(), 400U);
}

TEST(NoAllocation, RingQueueServesBatchesWithoutAllocating) {
    test::BackendWithQueue b("ram", 1 << 20);
    ASSERT_TRUE(b.queue);
    DeviceInfo info;
    info.size = 1 << 20;
    info.queue_depth = 16;
    info.max_io_bytes = 64 * 1024;
    KmodQueue kq{0, -1, info, *b.backend, *b.queue, b.stats};
    userblk_ring_layout l = test::kernel_layout(16, 64 * 1024);
    auto area = Mapping::anonymous(l.map_size, false, "fake ring");
    ASSERT_TRUE(area.ok());
    auto fake = std::make_unique<test::FakeRingKernel>(area->data(), l);
    test::FakeRingKernel* kernel = fake.get();
    auto worker = ring::RingQueue::attach(kq, std::move(area).value(), l, std::move(fake), 0);
    ASSERT_TRUE(worker.ok()) << worker.status().message();
    std::vector<test::FakeRequest> batch;
    for (std::uint16_t t = 0; t < 16; t += 4) {
        batch.push_back({t, USERBLK_OP_WRITE, t * 4096ULL, 4096, test::pattern(4096, t), {}});
        batch.push_back(
            {static_cast<std::uint16_t>(t + 1), USERBLK_OP_READ, t * 4096ULL, 4096, {}, {}});
        batch.push_back({static_cast<std::uint16_t>(t + 2), USERBLK_OP_FLUSH, 0, 0, {}, {}});
        batch.push_back(
            {static_cast<std::uint16_t>(t + 3), USERBLK_OP_DISCARD, 65536, 4096, {}, {}});
    }
    std::uint64_t in_loop = 0;
    for (int round = 0; round < 100; ++round) {
        for (const auto& r : batch) {
            ASSERT_TRUE(kernel->publish(r));
        }
        std::uint64_t before = g_allocations.load();
        ASSERT_EQ(worker.value()->serve_available(), ring::StepStatus::served);
        in_loop += g_allocations.load() - before;
        ASSERT_GE(kernel->enter(0), 0); // the fake kernel takes the completions (and allocates)
    }
    EXPECT_EQ(in_loop, 0U);
    EXPECT_EQ(b.stats.requests[static_cast<std::size_t>(OpKind::read)].get(), 400U);
    EXPECT_EQ(kernel->taken.size(), 1600U);
}

TEST(NoAllocation, PipeAdapterDoesNotAllocate) {
    test::BackendWithQueue b("ram", 1 << 20);
    ASSERT_TRUE(b.queue);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    std::uint64_t before = g_allocations.load();
    for (int i = 0; i < 10; ++i) {
        ASSERT_EQ(b.backend->read_to_pipe(*b.queue, fds[1], 0, 4096), 0);
        ASSERT_EQ(b.backend->write_from_pipe(*b.queue, fds[0], 8192, 4096, 0), 0);
    }
    EXPECT_EQ(g_allocations.load(), before);
    ::close(fds[0]);
    ::close(fds[1]);
}

TEST(NoAllocation, NbdServerServesRequestsWithoutAllocating) {
    test::BackendWithQueue b("ram", 1 << 20); // the backend; the connection has its own queue
    ASSERT_TRUE(b.backend);
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    unique_fd client(fds[0]);
    nbd::ServerConfig cfg;
    cfg.size = 1 << 20;
    cfg.flags = nbd::transmission_flags(USERBLK_F_FLUSH | USERBLK_F_DISCARD, true);
    cfg.max_payload = 1 << 20;
    QueueStats stats;
    auto conn = nbd::ServerConnection::open(unique_fd(fds[1]), cfg, *b.backend, 0, stats);
    ASSERT_TRUE(conn.ok()) << conn.status().message();
    std::jthread server([&](std::stop_token stop) {
        if (conn.value()->negotiate().ok()) {
            (void)conn.value()->serve(stop);
        }
    });
    ASSERT_TRUE(nbd::handshake(client.get(), "", "test").ok());
    // Requests and replies through buffers made here, before counting: the client allocates
    // nothing either. Small and large writes (in the receive buffer, and through the
    // connection's buffer), reads, flushes with FUA, trims.
    static std::array<std::byte, 256 * 1024> data{};
    std::array<std::byte, nbd::kReplySize> reply{};
    auto round_trip = [&](std::uint16_t type, std::uint16_t flags, std::uint64_t off,
                          std::uint32_t len) {
        nbd::RequestHeader h = nbd::encode_request(type, flags, off + 1, off, len);
        std::array<iovec, 2> iov = {iovec{h.data(), h.size()},
                                    iovec{data.data(), type == nbd::kCmdWrite ? len : 0U}};
        if (nbd::send_all(client.get(), iov, 0) != 0 || nbd::recv_all(client.get(), reply) != 0 ||
            nbd::decode_reply(reply).error != 0) {
            return false;
        }
        return type != nbd::kCmdRead ||
               nbd::recv_all(client.get(), std::span(data.data(), len)) == 0;
    };
    auto one_round = [&] {
        return round_trip(nbd::kCmdWrite, 0, 0, 4096) &&
               round_trip(nbd::kCmdWrite, nbd::kCmdFlagFua, 65536, 200 * 1024) &&
               round_trip(nbd::kCmdRead, 0, 0, 4096) &&
               round_trip(nbd::kCmdRead, 0, 65536, 200 * 1024) &&
               round_trip(nbd::kCmdFlush, 0, 0, 0) && round_trip(nbd::kCmdTrim, 0, 8192, 4096);
    };
    ASSERT_TRUE(one_round()); // warm up
    std::uint64_t before = g_allocations.load();
    for (int i = 0; i < 50; ++i) {
        ASSERT_TRUE(one_round());
    }
    EXPECT_EQ(g_allocations.load(), before);
    server.request_stop();
}

} // namespace
