// The ring transport without a kernel: index arithmetic and its wrap at 2^32, the checks of the
// layout and of request entries, and the serve loop (RingQueue) against a fake of the kernel's
// side over ordinary memory (ring_fake.h): data through the buffers, syscalls per request in both
// modes, batching, and every lie a kernel could tell.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

#include <fcntl.h>
#include <gtest/gtest.h>

#include "core/unique_fd.h"
#include "transports/ring/protocol.h"
#include "transports/ring/ring.h"
#include "ring_fake.h"
#include "test_util.h"

namespace {

using namespace userblk;
using namespace userblk::ring;
using test::FakeRequest;
using test::FakeRingKernel;
using test::pattern;

const std::size_t kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
constexpr unsigned kWait = USERBLK_RING_ENTER_WAIT;

// ---- indices ----------------------------------------------------------------------------------

TEST(RingIndex, DistanceWrapsAt2To32) {
    EXPECT_EQ(distance(7, 3), 4U);
    EXPECT_EQ(distance(2, 0xfffffffeU), 4U);
    EXPECT_EQ(distance(0, 0xffffffffU), 1U);
    EXPECT_EQ(distance(5, 5), 0U);
}

TEST(RingIndex, RangeAcceptsZeroToAWholeRingAhead) {
    EXPECT_TRUE(in_range(0xfffffffeU, 0xfffffffeU, 8));  // empty
    EXPECT_TRUE(in_range(6, 0xfffffffeU, 8));            // full, across the wrap
    EXPECT_FALSE(in_range(7, 0xfffffffeU, 8));           // more than a ring ahead
    EXPECT_FALSE(in_range(0xfffffffdU, 0xfffffffeU, 8)); // behind the head
    EXPECT_FALSE(in_range(3, 4, 1024));
}

TEST(RingIndex, SlotIsTheIndexModuloEntries) {
    EXPECT_EQ(slot(0xffffffffU, 8), 7U);
    EXPECT_EQ(slot(0xffffffffU + 1U, 8), 0U);
    EXPECT_EQ(slot(13, 8), 5U);
    EXPECT_EQ(slot(12345, 1), 0U);
}

// ---- layout -----------------------------------------------------------------------------------

TEST(RingLayout, TheKernelsLayoutsAreAccepted) {
    for (std::uint32_t depth : {1U, 3U, 4U, 64U, 1000U, 1024U}) {
        for (std::uint32_t max_io : {4096U, 65536U, 1U << 20}) {
            userblk_ring_layout l = test::kernel_layout(depth, max_io, kPage);
            EXPECT_EQ(layout_problem(l, depth, max_io, kPage), "")
                << "depth " << depth << " max_io " << max_io;
        }
    }
}

TEST(RingLayout, EveryBrokenFieldIsNamed) {
    constexpr std::uint32_t kDepth = 64;
    constexpr std::uint32_t kMaxIo = 65536;
    struct Case {
        const char* want; // in the message
        void (*mutate)(userblk_ring_layout&);
    } cases[] = {
        {"nr_bufs 63 differs", [](userblk_ring_layout& l) { l.nr_bufs = 63; }},
        {"sq_entries 96 is not a power of two", [](userblk_ring_layout& l) { l.sq_entries = 96; }},
        {"cq_entries 0 is not a power", [](userblk_ring_layout& l) { l.cq_entries = 0; }},
        {"sq_entries 32 is below the queue depth 64",
         [](userblk_ring_layout& l) { l.sq_entries = 32; }},
        {"buf_size 61440", [](userblk_ring_layout& l) { l.buf_size = 61440; }},
        {"buf_size 65537", [](userblk_ring_layout& l) { l.buf_size = 65537; }},
        {"map_size 0", [](userblk_ring_layout& l) { l.map_size = 0; }},
        {"map_size 12345", [](userblk_ring_layout& l) { l.map_size = 12345; }},
        {"misaligned", [](userblk_ring_layout& l) { l.sq_off += 4; }},
        {"misaligned", [](userblk_ring_layout& l) { l.buf_off += 512; }},
        {"buffers: ", [](userblk_ring_layout& l) { l.map_size -= kPage; }},
        {"completion ring: 1024 bytes at 18446744073709551608, outside the writable part",
         [](userblk_ring_layout& l) { l.cq_off = ~0ULL - 7; }},
        {"submission ring: 51539607552 bytes", // so many entries the ring outgrows the area
         [](userblk_ring_layout& l) { l.sq_entries = 1U << 31; }},
        {"submission ring: 1536 bytes at 4096, outside the read-only part", // in the writable
         [](userblk_ring_layout& l) { l.sq_off = l.rw_off; }},
        {"rw_off 0 is not a page boundary", [](userblk_ring_layout& l) { l.rw_off = 0; }},
        {"rw_off 100 is not a page boundary", [](userblk_ring_layout& l) { l.rw_off = 100; }},
        {"overlapping regions: kernel indices and submission ring",
         [](userblk_ring_layout& l) { l.sq_off = 64; }},
        {"overlapping regions: daemon indices and completion ring",
         [](userblk_ring_layout& l) { l.cq_off = l.daemon_off + 64; }},
        {"completion ring: 1024 bytes at 200, outside the writable part",
         [](userblk_ring_layout& l) { l.cq_off = l.sq_off + 8; }},
        {"overlapping regions: completion ring and buffers",
         [](userblk_ring_layout& l) { l.cq_off = l.buf_off - 8; }},
    };
    for (const auto& c : cases) {
        userblk_ring_layout l = test::kernel_layout(kDepth, kMaxIo, kPage);
        c.mutate(l);
        std::string why = layout_problem(l, kDepth, kMaxIo, kPage);
        EXPECT_NE(why.find(c.want), std::string::npos)
            << "want '" << c.want << "', got '" << why << "'";
    }
}

// ---- request entries --------------------------------------------------------------------------

TEST(RingEntry, ChecksTagLengthAndOp) {
    auto desc = [](std::uint16_t tag, std::uint8_t op, std::uint32_t len) {
        userblk_io_desc d{};
        d.tag = tag;
        d.op = op;
        d.len = len;
        return d;
    };
    EXPECT_EQ(check_request(desc(3, USERBLK_OP_READ, 8192), 4, 8192), EntryCheck::ok);
    EXPECT_EQ(check_request(desc(4, USERBLK_OP_READ, 512), 4, 8192), EntryCheck::bad_tag);
    EXPECT_EQ(check_request(desc(0xffff, USERBLK_OP_FLUSH, 0), 4, 8192), EntryCheck::bad_tag);
    EXPECT_EQ(check_request(desc(0, USERBLK_OP_READ, 8193), 4, 8192), EntryCheck::too_long);
    EXPECT_EQ(check_request(desc(0, USERBLK_OP_WRITE, 8193), 4, 8192), EntryCheck::too_long);
    // Discard and write-zeroes carry no data: their length is not bounded by the buffer.
    EXPECT_EQ(check_request(desc(0, USERBLK_OP_DISCARD, 1U << 30), 4, 8192), EntryCheck::ok);
    EXPECT_EQ(check_request(desc(0, USERBLK_OP_WRITE_ZEROES, 1U << 30), 4, 8192), EntryCheck::ok);
    EXPECT_EQ(check_request(desc(0, 5, 0), 4, 8192), EntryCheck::unknown_op);
    EXPECT_EQ(check_request(desc(0, 0xff, 0), 4, 8192), EntryCheck::unknown_op);
}

TEST(SharedRing, EntriesAndBuffersAreWhereTheLayoutSays) {
    userblk_ring_layout l = test::kernel_layout(4, 4096, kPage);
    auto area = Mapping::anonymous(l.map_size, false, "test ring");
    ASSERT_TRUE(area.ok());
    std::byte* base = area->data();
    SharedRing ring(base, l);
    userblk_io_desc d{};
    d.tag = 2;
    d.offset = 4242;
    std::memcpy(base + l.sq_off + 3 * sizeof(d), &d, sizeof(d));
    EXPECT_EQ(ring.request(0xffffffffU).offset, 4242U) << "index 2^32-1 is slot 3 of 4";
    userblk_io_cpl c{};
    c.tag = 1;
    c.gen = 99;
    ring.put_completion(5, c);
    userblk_io_cpl got{};
    std::memcpy(&got, base + l.cq_off + 1 * sizeof(got), sizeof(got));
    EXPECT_EQ(got.gen, 99U) << "index 5 is slot 1 of 4";
    EXPECT_EQ(ring.buffer(3).data(), base + l.buf_off + 3 * l.buf_size);
    EXPECT_EQ(ring.buffer(3).size(), l.buf_size);
    ring.set_sq_head(17);
    ring.set_cq_tail(19);
    auto* idx = reinterpret_cast<userblk_ring_daemon_indices*>(base + l.daemon_off);
    EXPECT_EQ(idx->sq_head, 17U);
    EXPECT_EQ(idx->cq_tail, 19U);
}

// ---- the serve loop ---------------------------------------------------------------------------

/// One ring queue over a ram backend and a fake kernel.
struct Rig {
    DeviceInfo info;
    test::BackendWithQueue b;
    userblk_ring_layout layout;
    std::unique_ptr<KmodQueue> kq;
    FakeRingKernel* kernel = nullptr; // owned by worker
    std::unique_ptr<RingQueue> worker;

    explicit Rig(std::uint32_t depth = 8, std::uint32_t poll_us = 0, std::uint32_t start = 0,
                 std::uint32_t max_io = 64 * 1024)
        : b("ram", 1 << 20, max_io), layout(test::kernel_layout(depth, max_io, kPage)) {
        info.size = 1 << 20;
        info.nr_queues = 1;
        info.queue_depth = depth;
        info.max_io_bytes = max_io;
        kq = std::make_unique<KmodQueue>(KmodQueue{0, -1, info, *b.backend, *b.queue, b.stats});
        auto area = Mapping::anonymous(layout.map_size, false, "fake ring");
        if (!area.ok()) {
            ADD_FAILURE() << area.status().message();
            return;
        }
        auto fake = std::make_unique<FakeRingKernel>(area->data(), layout, start);
        kernel = fake.get();
        auto w = RingQueue::attach(*kq, std::move(area).value(), layout, std::move(fake), poll_us);
        if (!w.ok()) {
            ADD_FAILURE() << w.status().message();
            kernel = nullptr;
            return;
        }
        worker = std::move(w).value();
    }

    Status run() { return worker->run(std::stop_token{}); }
    /// Whether the daemon's flags word asks the kernel to wake it.
    bool worker_ring_needs_wakeup() const {
        return (std::atomic_ref(kernel->didx().flags).load(std::memory_order_seq_cst) &
                USERBLK_RING_NEED_WAKEUP) != 0U;
    }
    std::vector<std::byte> stored(std::uint64_t off, std::size_t len) {
        std::vector<std::byte> v(len);
        EXPECT_EQ(b.backend->read(*b.queue, off, v), 0);
        return v;
    }
};

FakeRequest req(std::uint16_t tag, std::uint8_t op, std::uint64_t off, std::uint32_t len,
                std::vector<std::byte> data = {}) {
    return FakeRequest{tag, op, off, len, std::move(data), std::nullopt};
}

TEST(RingQueue, WriteThenReadGoesThroughTheBuffers) {
    Rig rig;
    ASSERT_TRUE(rig.worker);
    auto data = pattern(8192, 1);
    rig.kernel->arrivals.push_back({req(0, USERBLK_OP_WRITE, 4096, 8192, data)});
    rig.kernel->arrivals.push_back({req(1, USERBLK_OP_READ, 4096, 8192)});
    Status st = rig.run();
    EXPECT_TRUE(st.ok()) << st.message();

    ASSERT_EQ(rig.kernel->taken.size(), 2U);
    EXPECT_EQ(rig.kernel->taken[0].cpl.tag, 0);
    EXPECT_EQ(rig.kernel->taken[0].cpl.result, 0);
    EXPECT_EQ(rig.kernel->taken[1].cpl.tag, 1);
    EXPECT_EQ(rig.kernel->taken[1].cpl.result, 0);
    EXPECT_EQ(rig.kernel->taken[1].data, data) << "the READ's data was left in tag 1's buffer";
    EXPECT_EQ(rig.stored(4096, 8192), data) << "the WRITE's data was taken from tag 0's buffer";
    EXPECT_EQ(rig.kernel->rejected(), 0U);

    StatsSnapshot s = rig.b.stats.snapshot();
    EXPECT_EQ(s.user_data_bytes, 2U * 8192);
    EXPECT_EQ(s.wait_calls, rig.kernel->calls.size());
    EXPECT_EQ(s.read_calls + s.write_calls, 0U);
    EXPECT_EQ(s.request_batches.entries, 2U);
    EXPECT_EQ(s.completion_batches.entries, 2U);
    EXPECT_EQ(s.protocol_errors, 0U);
}

/// Submits the requests one at a time, the next when the previous completes (fio at QD1).
void chain_qd1(FakeRingKernel& k, int n) {
    auto left = std::make_shared<int>(n - 1);
    k.on_complete = [left](FakeRingKernel& kk, const userblk_io_cpl& c) {
        if ((*left)-- > 0) {
            kk.publish(req(static_cast<std::uint16_t>((c.tag + 1) % 8), USERBLK_OP_READ,
                           4096ULL * static_cast<unsigned>(*left), 4096));
        }
    };
    k.publish(req(0, USERBLK_OP_READ, 0, 4096));
}

TEST(RingQueue, QueueDepthOneCostsOneRingEnterPerRequestWhenWaiting) {
    Rig rig(8, 0);
    ASSERT_TRUE(rig.worker);
    chain_qd1(*rig.kernel, 20);
    EXPECT_TRUE(rig.run().ok());
    EXPECT_EQ(rig.kernel->taken.size(), 20U);
    // Each RING_ENTER(WAIT) hands over one completion and returns with the next request; the
    // last one finds the device gone.
    EXPECT_EQ(rig.kernel->calls, std::vector<unsigned>(20, kWait));
    EXPECT_EQ(rig.b.stats.completion_batches.count.get(), 20U);
}

TEST(RingQueue, QueueDepthOneCostsOneRingEnterPerRequestWhenPolling) {
    Rig rig(8, 1);
    ASSERT_TRUE(rig.worker);
    chain_qd1(*rig.kernel, 20);
    EXPECT_TRUE(rig.run().ok());
    EXPECT_EQ(rig.kernel->taken.size(), 20U);
    // Completions go back with RING_ENTER(0), which never sleeps; one WAIT once the queue idles.
    std::vector<unsigned> want(20, 0U);
    want.push_back(kWait);
    EXPECT_EQ(rig.kernel->calls, want);
}

TEST(RingQueue, PollingPicksUpARequestWithoutASyscall) {
    Rig rig(8, 10'000'000); // spins for up to 10 s: the request comes long before
    ASSERT_TRUE(rig.worker);
    std::atomic<bool> done{false};
    rig.kernel->on_complete = [&](FakeRingKernel&, const userblk_io_cpl&) { done = true; };
    Status result;
    std::jthread loop([&](std::stop_token stop) { result = rig.worker->run(stop); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto data = pattern(4096, 4);
    ASSERT_TRUE(rig.kernel->publish(req(5, USERBLK_OP_WRITE, 0, 4096, data)));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    loop.request_stop(); // ends the spin; the WAIT then finds the (fake) device gone
    loop.join();
    EXPECT_TRUE(done) << "the request was not served within 5 s";
    EXPECT_TRUE(result.ok()) << result.message();
    EXPECT_EQ(rig.kernel->calls, (std::vector<unsigned>{0U, kWait}))
        << "the request must be seen by spinning and its completion handed over with flags 0";
    EXPECT_EQ(rig.stored(0, 4096), data);
}

/// Runs rig's worker in spin mode (spin_us, poll_queue) while a submitter publishes n QD1 reads,
/// one after the other, and (on a poll queue) reaps each completion itself, as blk-mq's poll
/// does. Returns the worker's result after the stop.
Status spin_qd1(Rig& rig, std::uint32_t spin_us, bool poll_queue, int n, bool* clear_seen) {
    rig.worker->set_spinning(spin_us, poll_queue);
    std::atomic<int> answered{0}; // counted under the fake's lock, by whichever thread reaps
    rig.kernel->on_complete = [&](FakeRingKernel&, const userblk_io_cpl&) { ++answered; };
    Status result;
    std::jthread loop([&](std::stop_token stop) { result = rig.worker->run(stop); });
    *clear_seen = true;
    for (int i = 0; i < n; ++i) {
        EXPECT_TRUE(rig.kernel->publish(req(static_cast<std::uint16_t>(i % 8), USERBLK_OP_READ,
                                            4096ULL * static_cast<unsigned>(i), 4096)));
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (answered.load() == i && std::chrono::steady_clock::now() < deadline) {
            if (poll_queue) {
                (void)rig.kernel->poll();
            }
            std::this_thread::yield();
        }
        EXPECT_EQ(answered.load(), i + 1) << "request " << i << " was not answered";
        *clear_seen = *clear_seen && !rig.worker_ring_needs_wakeup();
    }
    loop.request_stop(); // ends the spin; the WAIT then finds the (fake) device gone
    loop.join();
    return result;
}

TEST(RingQueue, SpinningOnAPollQueueMakesNoSyscallPerRequest) {
    Rig rig(8);
    ASSERT_TRUE(rig.worker);
    bool clear = false;
    Status st = spin_qd1(rig, 10'000'000, true, 20, &clear);
    EXPECT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(rig.kernel->taken.size(), 20U);
    EXPECT_TRUE(clear) << "NEED_WAKEUP was set while the daemon spun";
    // The submitter's poll took every completion; the only RING_ENTER is the last sleep,
    // with NEED_WAKEUP set.
    EXPECT_EQ(rig.kernel->calls, (std::vector<unsigned>{kWait}));
    EXPECT_EQ(rig.kernel->flags_at_enter,
              (std::vector<std::uint32_t>{USERBLK_RING_NEED_WAKEUP}));
    EXPECT_EQ(rig.b.stats.completion_batches.entries.get(), 20U);
}

TEST(RingQueue, SpinningOnADefaultQueueHandsCompletionsOverWithoutSleeping) {
    Rig rig(8);
    ASSERT_TRUE(rig.worker);
    bool clear = false;
    Status st = spin_qd1(rig, 10'000'000, false, 20, &clear);
    EXPECT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(rig.kernel->taken.size(), 20U);
    EXPECT_TRUE(clear);
    // One RING_ENTER(0) per completion (nobody polls a default queue), then the sleep.
    std::vector<unsigned> want(20, 0U);
    want.push_back(kWait);
    EXPECT_EQ(rig.kernel->calls, want);
    EXPECT_EQ(rig.kernel->flags_at_enter.back(), (std::uint32_t)USERBLK_RING_NEED_WAKEUP);
    for (std::size_t i = 0; i + 1 < rig.kernel->flags_at_enter.size(); ++i) {
        EXPECT_EQ(rig.kernel->flags_at_enter[i], 0U) << "enter " << i << " while spinning";
    }
}

TEST(RingQueue, AnIdleSpinningDaemonSleepsWithTheFlagSetAndWakesForTheNextRequest) {
    Rig rig(8);
    ASSERT_TRUE(rig.worker);
    rig.worker->set_spinning(1, true); // 1 us of idle spin: it goes to sleep at once
    rig.kernel->arrivals.push_back({req(3, USERBLK_OP_READ, 0, 4096)});
    rig.kernel->arrivals.push_back({req(4, USERBLK_OP_READ, 4096, 4096)});
    Status st = rig.run();
    EXPECT_TRUE(st.ok()) << st.message();
    // Each arrival is "published while it sleeps" by its WAIT; the poller never came, so the
    // next WAIT hands the completion over.
    EXPECT_EQ(rig.kernel->taken.size(), 2U);
    EXPECT_EQ(rig.kernel->calls, (std::vector<unsigned>{kWait, kWait, kWait}));
    for (auto f : rig.kernel->flags_at_enter) {
        EXPECT_EQ(f, (std::uint32_t)USERBLK_RING_NEED_WAKEUP) << "a WAIT without the flag";
    }
    EXPECT_EQ(rig.kernel->rejected(), 0U);
}

TEST(RingQueue, ABatchIsAnsweredByOneRingEnter) {
    Rig rig(8);
    ASSERT_TRUE(rig.worker);
    std::vector<FakeRequest> batch;
    for (std::uint16_t t = 0; t < 8; ++t) {
        batch.push_back(t % 2 == 0 ? req(t, USERBLK_OP_WRITE, t * 4096ULL, 4096, pattern(4096, t))
                                   : req(t, USERBLK_OP_FLUSH, 0, 0));
    }
    rig.kernel->arrivals.push_back(batch);
    EXPECT_TRUE(rig.run().ok());
    EXPECT_EQ(rig.kernel->taken.size(), 8U);
    EXPECT_EQ(rig.kernel->calls, (std::vector<unsigned>{kWait, kWait}));
    StatsSnapshot s = rig.b.stats.snapshot();
    EXPECT_EQ(s.request_batches.count, 1U);
    EXPECT_EQ(s.request_batches.max, 8U);
    EXPECT_EQ(s.completion_batches.count, 1U);
    EXPECT_EQ(s.completion_batches.entries, 8U);
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::flush)], 4U);
    for (std::uint16_t t = 0; t < 8; t += 2) {
        EXPECT_EQ(rig.stored(t * 4096ULL, 4096), pattern(4096, t)) << "tag " << t;
    }
}

TEST(RingQueue, IndicesWrapAt2To32) {
    Rig rig(4, 0, 0xfffffffaU);
    ASSERT_TRUE(rig.worker);
    for (int round = 0; round < 4; ++round) {
        std::vector<FakeRequest> batch;
        for (std::uint16_t t = 0; t < 3; ++t) {
            batch.push_back(req(t, USERBLK_OP_WRITE, (round * 3 + t) * 4096ULL, 4096,
                                pattern(4096, round * 3U + t)));
        }
        batch.push_back(req(3, USERBLK_OP_READ, round * 3 * 4096ULL, 4096));
        rig.kernel->arrivals.push_back(batch);
    }
    EXPECT_TRUE(rig.run().ok());
    ASSERT_EQ(rig.kernel->taken.size(), 16U);
    for (int round = 0; round < 4; ++round) {
        const auto& read = rig.kernel->taken[round * 4 + 3];
        EXPECT_EQ(read.cpl.tag, 3);
        EXPECT_EQ(read.data, pattern(4096, round * 3U)) << "round " << round;
    }
    auto& idx = rig.kernel->didx();
    EXPECT_EQ(idx.sq_head, 0xfffffffaU + 16U);
    EXPECT_LT(idx.sq_head, 16U) << "the indices went past 2^32";
    EXPECT_EQ(idx.cq_tail, idx.sq_head);
    EXPECT_EQ(rig.kernel->rejected(), 0U);
}

TEST(RingQueue, ASubmissionTailMoreThanARingAheadIsFatal) {
    for (std::uint32_t lie : {9U, 0xffffffffU}) { // 9 > 8 entries ahead; or behind the head
        Rig rig(8, 0, 100);
        ASSERT_TRUE(rig.worker);
        rig.kernel->set_sq_tail(100 + lie);
        Status st = rig.run();
        EXPECT_EQ(st.error_number(), EPROTO);
        EXPECT_EQ(st.message(), "ring: queue 0: the kernel's submission tail is more than a ring "
                                "ahead: Protocol error (kernel index " +
                                    std::to_string(100U + lie) + ", ours 100)");
        EXPECT_EQ(rig.b.stats.protocol_errors.get(), 1U);
        EXPECT_TRUE(rig.kernel->calls.empty()) << "nothing was consumed or answered";
    }
}

TEST(RingQueue, MalformedEntriesAreRefusedAndCounted) {
    Rig rig(4, 0, 0, 4096);
    ASSERT_TRUE(rig.worker);
    rig.kernel->arrivals.push_back({
        req(7, USERBLK_OP_READ, 0, 512),  // tag beyond the buffers: dropped
        req(0, USERBLK_OP_READ, 0, 8192), // longer than a buffer
        req(1, 42, 0, 512),               // unknown op
        req(2, USERBLK_OP_READ, 0, 512),  // fine
    });
    EXPECT_TRUE(rig.run().ok());
    ASSERT_EQ(rig.kernel->taken.size(), 3U);
    EXPECT_EQ(rig.kernel->taken[0].cpl.tag, 0);
    EXPECT_EQ(rig.kernel->taken[0].cpl.result, -EIO);
    EXPECT_EQ(rig.kernel->taken[1].cpl.tag, 1);
    EXPECT_EQ(rig.kernel->taken[1].cpl.result, -EOPNOTSUPP);
    EXPECT_EQ(rig.kernel->taken[2].cpl.tag, 2);
    EXPECT_EQ(rig.kernel->taken[2].cpl.result, 0);
    StatsSnapshot s = rig.b.stats.snapshot();
    EXPECT_EQ(s.protocol_errors, 3U);
    EXPECT_EQ(s.io_errors, 2U);
    EXPECT_EQ(s.user_data_bytes, 512U) << "only the valid READ's data";
    EXPECT_EQ(rig.kernel->rejected(), 0U) << "every answer matched a request";
}

TEST(RingQueue, OnlyTheLatestEntryOfATagRuns) {
    Rig rig(4);
    ASSERT_TRUE(rig.worker);
    // Tag 0's READ timed out and the tag was reused for a WRITE before the daemon looked.
    ASSERT_TRUE(rig.kernel->publish(req(0, USERBLK_OP_READ, 8192, 4096)));
    rig.kernel->time_out(0);
    auto data = pattern(4096, 6);
    ASSERT_TRUE(rig.kernel->publish(req(0, USERBLK_OP_WRITE, 8192, 4096, data)));
    EXPECT_TRUE(rig.run().ok());
    ASSERT_EQ(rig.kernel->taken.size(), 1U);
    EXPECT_EQ(rig.kernel->taken[0].cpl.gen, 2U);
    EXPECT_EQ(rig.stored(8192, 4096), data) << "the stale READ overwrote the WRITE's buffer";
    EXPECT_EQ(rig.kernel->rejected(), 0U) << "the stale request was answered";
}

/// Fills the completion ring of a depth-4 rig with answers the kernel has not taken yet, and
/// reuses the four tags (their requests timed out) for four new WRITEs.
void fill_completion_ring(Rig& rig) {
    for (std::uint16_t t = 0; t < 4; ++t) {
        ASSERT_TRUE(rig.kernel->publish(req(t, USERBLK_OP_FLUSH, 0, 0)));
    }
    ASSERT_EQ(rig.worker->serve_available(), StepStatus::served);
    ASSERT_EQ(rig.worker->unhanded(), 4U);
    for (std::uint16_t t = 0; t < 4; ++t) {
        rig.kernel->time_out(t);
        ASSERT_TRUE(rig.kernel->publish(
            req(t, USERBLK_OP_WRITE, t * 4096ULL, 4096, pattern(4096, t + 10U))));
    }
}

TEST(RingQueue, AFullCompletionRingIsHandedOverToMakeRoom) {
    Rig rig(4);
    ASSERT_TRUE(rig.worker);
    fill_completion_ring(rig);
    EXPECT_EQ(rig.worker->serve_available(), StepStatus::served);
    EXPECT_EQ(rig.kernel->calls, std::vector<unsigned>{0U}) << "one RING_ENTER(0) made room";
    EXPECT_EQ(rig.kernel->rejected(), 4U) << "the stale answers";
    EXPECT_EQ(rig.b.stats.rejected_completions.get(), 4U);
    EXPECT_TRUE(rig.run().ok());
    ASSERT_EQ(rig.kernel->taken.size(), 4U);
    for (std::uint16_t t = 0; t < 4; ++t) {
        EXPECT_EQ(rig.stored(t * 4096ULL, 4096), pattern(4096, t + 10U));
    }
}

TEST(RingQueue, ACompletionHeadOutOfRangeIsFatal) {
    Rig rig(4);
    ASSERT_TRUE(rig.worker);
    fill_completion_ring(rig);
    rig.kernel->set_cq_head(4 + 1); // ahead of the daemon's tail
    EXPECT_EQ(rig.worker->serve_available(), StepStatus::failed);
    EXPECT_EQ(rig.worker->error().message(),
              "ring: queue 0: the kernel's completion head is out of range: Protocol error "
              "(kernel index 5, ours 4)");
    EXPECT_EQ(rig.b.stats.protocol_errors.get(), 1U);
}

TEST(RingQueue, AKernelThatTakesNoCompletionFromAFullRingIsFatal) {
    Rig rig(4);
    ASSERT_TRUE(rig.worker);
    fill_completion_ring(rig);
    rig.kernel->errors.push_back(EFAULT);
    EXPECT_EQ(rig.worker->serve_available(), StepStatus::failed);
    EXPECT_EQ(rig.worker->error().error_number(), EFAULT);
}

TEST(RingQueue, ARefusedCompletionTailEndsWithAClearError) {
    Rig rig;
    ASSERT_TRUE(rig.worker);
    rig.kernel->errors.push_back(EINVAL);
    Status st = rig.run();
    EXPECT_EQ(st.message(), "ring: RING_ENTER on queue 0 failed: Invalid argument (the kernel "
                            "refused the completion tail 0 (its head 0))");
    EXPECT_EQ(rig.b.stats.protocol_errors.get(), 1U);
}

TEST(RingQueue, InterruptedWaitsAreRetried) {
    Rig rig;
    ASSERT_TRUE(rig.worker);
    rig.kernel->errors = {EINTR, EINTR};
    rig.kernel->arrivals.push_back({req(0, USERBLK_OP_FLUSH, 0, 0)});
    EXPECT_TRUE(rig.run().ok());
    EXPECT_EQ(rig.kernel->taken.size(), 1U);
    EXPECT_EQ(rig.kernel->calls.size(), 4U); // EINTR, EINTR, WAIT (the flush), WAIT (ENODEV)
}

TEST(RingQueue, OtherRingEnterErrorsAreFatalAndNamed) {
    Rig rig;
    ASSERT_TRUE(rig.worker);
    rig.kernel->errors.push_back(EBADF);
    EXPECT_EQ(rig.run().message(), "ring: RING_ENTER on queue 0 failed: Bad file descriptor");
}

TEST(RingQueue, AttachRefusesAWrongMappingOrInconsistentIndices) {
    test::BackendWithQueue b("ram", 1 << 20);
    DeviceInfo info;
    info.size = 1 << 20;
    info.queue_depth = 4;
    info.max_io_bytes = 4096;
    KmodQueue kq{3, -1, info, *b.backend, *b.queue, b.stats};
    userblk_ring_layout l = test::kernel_layout(4, 4096, kPage);

    auto small = Mapping::anonymous(l.map_size - kPage, false, "short");
    ASSERT_TRUE(small.ok());
    std::byte* small_base = small->data();
    auto w = RingQueue::attach(kq, std::move(small).value(), l,
                               std::make_unique<FakeRingKernel>(small_base, l), 0);
    ASSERT_FALSE(w.ok());
    EXPECT_NE(w.status().message().find("ring: queue 3: the kernel's ring layout is unusable"),
              std::string::npos)
        << w.status().message();

    auto area = Mapping::anonymous(l.map_size, false, "ring");
    ASSERT_TRUE(area.ok());
    std::byte* base = area->data();
    auto fake = std::make_unique<FakeRingKernel>(base, l);
    fake->set_sq_tail(5); // five requests in a ring of four
    w = RingQueue::attach(kq, std::move(area).value(), l, std::move(fake), 0);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().message(), "ring: queue 3: the ring's indices are inconsistent: "
                                    "Protocol error (sq 0..5, cq 0..0)");

    userblk_ring_layout bad = l;
    bad.nr_bufs = 8;
    auto area2 = Mapping::anonymous(l.map_size, false, "ring");
    ASSERT_TRUE(area2.ok());
    std::byte* base2 = area2->data();
    w = RingQueue::attach(kq, std::move(area2).value(), bad,
                          std::make_unique<FakeRingKernel>(base2, l), 0);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().error_number(), EPROTO);
}

TEST(RingQueue, CreateOnAFdThatIsNotARingQueueSaysSo) {
    test::BackendWithQueue b("ram", 1 << 20);
    DeviceInfo info;
    info.size = 1 << 20;
    info.queue_depth = 4;
    info.max_io_bytes = 4096;
    KmodQueue bad{1, -1, info, *b.backend, *b.queue, b.stats};
    auto w = RingQueue::create(bad, 0);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().message(), "ring: queue 1: RING_LAYOUT failed: Bad file descriptor");

    unique_fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(null.valid());
    KmodQueue other{1, null.get(), info, *b.backend, *b.queue, b.stats};
    w = RingQueue::create(other, 0);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().error_number(), ENOTTY);
    EXPECT_NE(w.status().message().find("differ in version"), std::string::npos)
        << w.status().message();
}

} // namespace
