// The copy transport's wire format: parsing request batches, encoding completion batches, and
// the partial-write rules of sending them.
#include <cerrno>
#include <deque>
#include <optional>

#include <gtest/gtest.h>

#include "transports/desc/codec.h"
#include "copy_helpers.h"
#include "test_util.h"

namespace {

using namespace userblk;
using namespace userblk::copy;
using test::BatchBuilder;
using test::pattern;

constexpr std::uint32_t kMaxIo = 64 * 1024;

// --- RequestParser ----------------------------------------------------------------------------

TEST(RequestParser, EmptyBatchEnds) {
    RequestParser p({}, kMaxIo);
    Request r;
    EXPECT_EQ(p.next(r), ParseStatus::end);
    EXPECT_EQ(p.consumed(), 0U);
}

TEST(RequestParser, SingleReadHasNoData) {
    BatchBuilder b;
    b.add(7, USERBLK_OP_READ, 4096, 8192, {}, 42);
    RequestParser p(b.span(), kMaxIo);
    Request r;
    ASSERT_EQ(p.next(r), ParseStatus::request);
    EXPECT_EQ(r.desc.tag, 7);
    EXPECT_EQ(r.desc.op, USERBLK_OP_READ);
    EXPECT_EQ(r.desc.gen, 42U);
    EXPECT_EQ(r.desc.offset, 4096U);
    EXPECT_EQ(r.desc.len, 8192U);
    EXPECT_TRUE(r.data.empty());
    EXPECT_EQ(p.next(r), ParseStatus::end);
    EXPECT_EQ(p.consumed(), sizeof(userblk_io_desc));
}

TEST(RequestParser, WriteCarriesItsDataInPlace) {
    auto data = pattern(4096, 1);
    BatchBuilder b;
    b.add(3, USERBLK_OP_WRITE, 0, 4096, data);
    RequestParser p(b.span(), kMaxIo);
    Request r;
    ASSERT_EQ(p.next(r), ParseStatus::request);
    ASSERT_EQ(r.data.size(), 4096U);
    EXPECT_EQ(r.data.data(), b.bytes.data() + sizeof(userblk_io_desc)); // no copy
    EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), data.begin()));
    EXPECT_EQ(p.next(r), ParseStatus::end);
}

TEST(RequestParser, MixedBatchInOrder) {
    auto w1 = pattern(4096, 1);
    auto w2 = pattern(512, 2);
    BatchBuilder b;
    b.add(0, USERBLK_OP_READ, 0, 4096)
        .add(1, USERBLK_OP_WRITE, 8192, 4096, w1)
        .add(2, USERBLK_OP_FLUSH, 0, 0)
        .add(3, USERBLK_OP_DISCARD, 1 << 20, 1 << 21) // longer than max_io: fine, no data
        .add(4, USERBLK_OP_WRITE, 512, 512, w2)
        .add(5, USERBLK_OP_WRITE_ZEROES, 0, 65536);
    RequestParser p(b.span(), kMaxIo);
    Request r;
    const std::uint8_t ops[] = {USERBLK_OP_READ,    USERBLK_OP_WRITE, USERBLK_OP_FLUSH,
                                USERBLK_OP_DISCARD, USERBLK_OP_WRITE, USERBLK_OP_WRITE_ZEROES};
    for (std::uint16_t tag = 0; tag < 6; ++tag) {
        ASSERT_EQ(p.next(r), ParseStatus::request) << "tag " << tag;
        EXPECT_EQ(r.desc.tag, tag);
        EXPECT_EQ(r.desc.op, ops[tag]);
        EXPECT_EQ(r.data.size(), r.desc.op == USERBLK_OP_WRITE ? r.desc.len : 0U);
        if (tag == 1) {
            EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), w1.begin()));
        }
        if (tag == 4) {
            EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), w2.begin()));
        }
    }
    EXPECT_EQ(p.next(r), ParseStatus::end);
    EXPECT_EQ(p.consumed(), b.bytes.size());
}

TEST(RequestParser, TrailingBytesAreTruncated) {
    BatchBuilder b;
    b.add(1, USERBLK_OP_READ, 0, 512).garbage(10);
    RequestParser p(b.span(), kMaxIo);
    Request r;
    EXPECT_EQ(p.next(r), ParseStatus::request);
    EXPECT_EQ(p.next(r), ParseStatus::truncated);
    EXPECT_EQ(p.next(r), ParseStatus::end);
    EXPECT_EQ(p.consumed(), b.bytes.size());
}

TEST(RequestParser, WriteDataPastTheBatchIsInvalidAndEndsIt) {
    BatchBuilder b;
    auto data = pattern(512, 3);
    b.add(9, USERBLK_OP_WRITE, 0, 4096, data); // claims 4096, carries 512
    b.add(10, USERBLK_OP_READ, 0, 512);
    b.bytes.resize(sizeof(userblk_io_desc) + 512); // cut right after the data
    RequestParser p(b.span(), kMaxIo);
    Request r;
    ASSERT_EQ(p.next(r), ParseStatus::invalid);
    EXPECT_EQ(r.desc.tag, 9);
    EXPECT_EQ(p.next(r), ParseStatus::end);
}

TEST(RequestParser, WriteLongerThanMaxIoIsInvalidAndEndsTheBatch) {
    auto data = pattern(8192, 4);
    BatchBuilder b;
    b.add(4, USERBLK_OP_WRITE, 0, 8192, data).add(5, USERBLK_OP_READ, 0, 512);
    RequestParser p(b.span(), 4096);
    Request r;
    ASSERT_EQ(p.next(r), ParseStatus::invalid);
    EXPECT_EQ(r.desc.tag, 4);
    EXPECT_EQ(p.next(r), ParseStatus::end); // where tag 5 starts cannot be trusted
}

TEST(RequestParser, ReadLongerThanMaxIoIsInvalidButTheBatchGoesOn) {
    BatchBuilder b;
    b.add(4, USERBLK_OP_READ, 0, 8192).add(5, USERBLK_OP_READ, 0, 512);
    RequestParser p(b.span(), 4096);
    Request r;
    ASSERT_EQ(p.next(r), ParseStatus::invalid);
    EXPECT_EQ(r.desc.tag, 4);
    ASSERT_EQ(p.next(r), ParseStatus::request);
    EXPECT_EQ(r.desc.tag, 5);
    EXPECT_EQ(p.next(r), ParseStatus::end);
}

TEST(RequestParser, UnknownOpIsARequestWithoutData) {
    BatchBuilder b;
    b.add(1, 99, 0, 4096).add(2, USERBLK_OP_READ, 0, 512);
    RequestParser p(b.span(), kMaxIo);
    Request r;
    ASSERT_EQ(p.next(r), ParseStatus::request);
    EXPECT_EQ(r.desc.op, 99);
    EXPECT_TRUE(r.data.empty());
    ASSERT_EQ(p.next(r), ParseStatus::request);
    EXPECT_EQ(r.desc.tag, 2);
}

// userblk.ko puts the next descriptor right after the data (desc.len bytes, no padding).
TEST(RequestParser, NextEntryStartsRightAfterTheData) {
    auto d1 = pattern(13, 5);
    auto d2 = pattern(5, 6);
    BatchBuilder b;
    b.add(1, USERBLK_OP_WRITE, 0, 13, d1).add(2, USERBLK_OP_WRITE, 0, 5, d2);
    EXPECT_EQ(b.bytes.size(), 24U + 13U + 24U + 5U);
    RequestParser p(b.span(), kMaxIo);
    Request r;
    ASSERT_EQ(p.next(r), ParseStatus::request);
    EXPECT_EQ(r.data.size(), 13U);
    EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), d1.begin()));
    ASSERT_EQ(p.next(r), ParseStatus::request);
    EXPECT_EQ(r.desc.tag, 2);
    EXPECT_EQ(r.desc.len, 5U);
    EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), d2.begin()));
    EXPECT_EQ(p.next(r), ParseStatus::end);
    EXPECT_EQ(p.consumed(), b.bytes.size());
}

// --- CompletionBatch --------------------------------------------------------------------------

struct BatchStorage {
    std::vector<std::byte> buf;
    std::vector<std::uint32_t> sizes;
    CompletionBatch batch;
    BatchStorage(std::size_t bytes, std::size_t entries)
        : buf(bytes), sizes(entries), batch(buf, sizes) {}
};

userblk_io_desc desc(std::uint16_t tag, std::uint32_t gen, std::uint8_t op = USERBLK_OP_WRITE) {
    userblk_io_desc d{};
    d.tag = tag;
    d.gen = gen;
    d.op = op;
    return d;
}

TEST(CompletionBatch, EncodesEntriesWithoutData) {
    BatchStorage s(4096, 8);
    s.buf.assign(s.buf.size(), std::byte{0xff}); // reserved fields must come out zero
    ASSERT_TRUE(s.batch.add(desc(3, 30), 0));
    ASSERT_TRUE(s.batch.add(desc(4, 40), -EIO));
    EXPECT_EQ(s.batch.entries(), 2U);
    EXPECT_EQ(s.batch.bytes().size(), 2 * sizeof(userblk_io_cpl));
    auto got = test::decode(s.batch.bytes(), {});
    ASSERT_EQ(got.size(), 2U);
    EXPECT_EQ(got[0].cpl.tag, 3);
    EXPECT_EQ(got[0].cpl.gen, 30U);
    EXPECT_EQ(got[0].cpl.result, 0);
    EXPECT_EQ(got[0].cpl.reserved0, 0);
    EXPECT_EQ(got[0].cpl.reserved1, 0U);
    EXPECT_EQ(got[1].cpl.tag, 4);
    EXPECT_EQ(got[1].cpl.result, -EIO);
    EXPECT_EQ(s.batch.entry(1).gen, 40U);
}

TEST(CompletionBatch, ReadDataKeptOnSuccessDroppedOnError) {
    BatchStorage s(16384, 8);
    auto data = pattern(4096, 1);
    auto area = s.batch.reserve_data(desc(1, 11, USERBLK_OP_READ), 4096);
    ASSERT_TRUE(area);
    ASSERT_EQ(area->size(), 4096U);
    std::memcpy(area->data(), data.data(), data.size());
    s.batch.commit_data(0);
    auto area2 = s.batch.reserve_data(desc(2, 22, USERBLK_OP_READ), 4096);
    ASSERT_TRUE(area2);
    std::memset(area2->data(), 0x77, area2->size());
    s.batch.commit_data(-EIO);
    ASSERT_TRUE(s.batch.add(desc(3, 33), 0));

    EXPECT_EQ(s.batch.entry_size(0), sizeof(userblk_io_cpl) + 4096);
    EXPECT_EQ(s.batch.entry_size(1), sizeof(userblk_io_cpl));
    EXPECT_EQ(s.batch.bytes().size(), 3 * sizeof(userblk_io_cpl) + 4096);
    auto got = test::decode(s.batch.bytes(), {{1, 4096}, {2, 4096}});
    ASSERT_EQ(got.size(), 3U);
    EXPECT_EQ(got[0].cpl.tag, 1);
    EXPECT_EQ(got[0].data, data);
    EXPECT_EQ(got[1].cpl.tag, 2);
    EXPECT_EQ(got[1].cpl.result, -EIO);
    EXPECT_TRUE(got[1].data.empty());
    EXPECT_EQ(got[2].cpl.tag, 3);
    EXPECT_EQ(got[2].cpl.gen, 33U);
}

// userblk.ko reads a READ completion as the header and exactly len bytes, no padding.
TEST(CompletionBatch, NextEntryStartsRightAfterTheData) {
    BatchStorage s(256, 4);
    auto area = s.batch.reserve_data(desc(1, 1, USERBLK_OP_READ), 13);
    ASSERT_TRUE(area);
    s.batch.commit_data(0);
    ASSERT_TRUE(s.batch.add(desc(2, 7), 0));
    EXPECT_EQ(s.batch.entry_size(0), 16U + 13U);
    EXPECT_EQ(s.batch.bytes().size(), 16U + 13U + 16U);
    userblk_io_cpl second{};
    std::memcpy(&second, s.buf.data() + 29, sizeof(second));
    EXPECT_EQ(second.tag, 2);
    EXPECT_EQ(second.gen, 7U);
}

TEST(CompletionBatch, RefusesWhatDoesNotFit) {
    BatchStorage s(sizeof(userblk_io_cpl) * 2 + 512, 8);
    EXPECT_TRUE(s.batch.fits(512));
    EXPECT_FALSE(s.batch.fits(1024));
    EXPECT_FALSE(s.batch.reserve_data(desc(1, 1, USERBLK_OP_READ), 1024).has_value());
    ASSERT_TRUE(s.batch.reserve_data(desc(1, 1, USERBLK_OP_READ), 512).has_value());
    EXPECT_FALSE(s.batch.add(desc(9, 9), 0)); // a reservation is open
    s.batch.commit_data(0);
    EXPECT_TRUE(s.batch.add(desc(2, 2), 0));
    EXPECT_FALSE(s.batch.add(desc(3, 3), 0)); // buffer full
    EXPECT_EQ(s.batch.entries(), 2U);
    s.batch.clear();
    EXPECT_EQ(s.batch.entries(), 0U);
    EXPECT_TRUE(s.batch.add(desc(3, 3), 0));
}

TEST(CompletionBatch, BoundedByEntryCapacity) {
    BatchStorage s(4096, 2);
    EXPECT_TRUE(s.batch.add(desc(1, 1), 0));
    EXPECT_TRUE(s.batch.add(desc(2, 1), 0));
    EXPECT_FALSE(s.batch.fits(0));
    EXPECT_FALSE(s.batch.add(desc(3, 1), 0));
}

TEST(QueueBufferSize, HoldsOneMaxWriteAndADescriptorPerTag) {
    std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    for (std::uint32_t max_io : {4096U, 131072U, 1U << 20}) {
        for (std::uint32_t depth : {1U, 64U, 1024U}) {
            std::size_t n = queue_buffer_size(max_io, depth);
            EXPECT_GE(n, USERBLK_COPY_MIN_READ(max_io) + depth * sizeof(userblk_io_desc));
            EXPECT_GE(n, completion_entry_size(max_io));
            EXPECT_EQ(n % page, 0U);
            EXPECT_LT(n, USERBLK_COPY_MIN_READ(max_io) + depth * sizeof(userblk_io_desc) + page);
        }
    }
}

// --- send_completions -----------------------------------------------------------------------

/// Plays the kernel's side of write(): each call takes the next scripted answer (a byte count to
/// apply, or -errno), and applies everything once the script runs out.
class FakeSink final : public CompletionSink {
public:
    explicit FakeSink(std::deque<ssize_t> script) : script_(std::move(script)) {}
    ssize_t write(std::span<const std::byte> bytes) noexcept override {
        calls.emplace_back(bytes.begin(), bytes.end());
        if (script_.empty()) {
            return static_cast<ssize_t>(bytes.size());
        }
        ssize_t r = script_.front();
        script_.pop_front();
        return r;
    }
    std::vector<std::vector<std::byte>> calls;

private:
    std::deque<ssize_t> script_;
};

TEST(SendCompletions, OneWriteForTheWholeBatch) {
    BatchStorage s(4096, 8);
    for (std::uint16_t t = 0; t < 5; ++t) {
        ASSERT_TRUE(s.batch.add(desc(t, 1), 0));
    }
    FakeSink sink({});
    SendResult r = send_completions(s.batch, sink);
    EXPECT_EQ(r.status, SendStatus::sent);
    EXPECT_EQ(r.write_calls, 1U);
    EXPECT_EQ(r.rejected, 0U);
    ASSERT_EQ(sink.calls.size(), 1U);
    EXPECT_TRUE(std::equal(sink.calls[0].begin(), sink.calls[0].end(), s.batch.bytes().begin()));
}

TEST(SendCompletions, ShortWriteSkipsTheRefusedEntryAndSendsTheRest) {
    BatchStorage s(16384, 8);
    auto area = s.batch.reserve_data(desc(10, 1, USERBLK_OP_READ), 4096);
    ASSERT_TRUE(area);
    s.batch.commit_data(0);
    ASSERT_TRUE(s.batch.add(desc(11, 1), 0)); // the kernel refuses this one (stale gen)
    ASSERT_TRUE(s.batch.add(desc(12, 1), 0));
    const ssize_t first = 16 + 4096;
    FakeSink sink({first, -ENOENT});
    SendResult r = send_completions(s.batch, sink);
    EXPECT_EQ(r.status, SendStatus::sent);
    EXPECT_EQ(r.rejected, 1U);
    EXPECT_EQ(r.first_error, ENOENT);
    EXPECT_EQ(r.first_tag, 11);
    ASSERT_EQ(sink.calls.size(), 3U);
    EXPECT_EQ(r.write_calls, 3U);
    EXPECT_EQ(sink.calls[0].size(), s.batch.bytes().size());
    EXPECT_EQ(sink.calls[1].size(), 32U); // entries 11 and 12
    ASSERT_EQ(sink.calls[2].size(), 16U); // entry 12 alone
    userblk_io_cpl last{};
    std::memcpy(&last, sink.calls[2].data(), sizeof(last));
    EXPECT_EQ(last.tag, 12);
}

TEST(SendCompletions, FirstEntryRefusedIsSkipped) {
    BatchStorage s(4096, 8);
    ASSERT_TRUE(s.batch.add(desc(1, 1), 0));
    ASSERT_TRUE(s.batch.add(desc(2, 1), 0));
    FakeSink sink({-EINVAL});
    SendResult r = send_completions(s.batch, sink);
    EXPECT_EQ(r.status, SendStatus::sent);
    EXPECT_EQ(r.rejected, 1U);
    EXPECT_EQ(r.first_error, EINVAL);
    EXPECT_EQ(r.first_tag, 1);
    ASSERT_EQ(sink.calls.size(), 2U);
    EXPECT_EQ(sink.calls[1].size(), 16U);
}

TEST(SendCompletions, EveryEntryRefusedStillTerminates) {
    BatchStorage s(4096, 8);
    for (std::uint16_t t = 0; t < 3; ++t) {
        ASSERT_TRUE(s.batch.add(desc(t, 1), 0));
    }
    FakeSink sink({-ENOENT, -ENOENT, -ENOENT});
    SendResult r = send_completions(s.batch, sink);
    EXPECT_EQ(r.status, SendStatus::sent);
    EXPECT_EQ(r.rejected, 3U);
    EXPECT_EQ(r.write_calls, 3U);
}

TEST(SendCompletions, InterruptedWriteIsRetried) {
    BatchStorage s(4096, 8);
    ASSERT_TRUE(s.batch.add(desc(1, 1), 0));
    FakeSink sink({-EINTR, -EINTR});
    SendResult r = send_completions(s.batch, sink);
    EXPECT_EQ(r.status, SendStatus::sent);
    EXPECT_EQ(r.rejected, 0U);
    EXPECT_EQ(r.write_calls, 3U);
}

TEST(SendCompletions, DeadDeviceStops) {
    BatchStorage s(4096, 8);
    ASSERT_TRUE(s.batch.add(desc(1, 1), 0));
    ASSERT_TRUE(s.batch.add(desc(2, 1), 0));
    FakeSink sink({16, -ENODEV});
    SendResult r = send_completions(s.batch, sink);
    EXPECT_EQ(r.status, SendStatus::device_gone);
    EXPECT_EQ(sink.calls.size(), 2U);
}

TEST(SendCompletions, ReturnInsideAnEntryIsAProtocolError) {
    BatchStorage s(4096, 8);
    ASSERT_TRUE(s.batch.add(desc(1, 1), 0));
    ASSERT_TRUE(s.batch.add(desc(2, 1), 0));
    FakeSink sink({20});
    SendResult r = send_completions(s.batch, sink);
    EXPECT_EQ(r.status, SendStatus::failed);
    EXPECT_EQ(r.first_error, EPROTO);
}

TEST(SendCompletions, MoreThanAskedIsAProtocolError) {
    BatchStorage s(4096, 8);
    ASSERT_TRUE(s.batch.add(desc(1, 1), 0));
    FakeSink sink({64});
    EXPECT_EQ(send_completions(s.batch, sink).status, SendStatus::failed);
}

TEST(SendCompletions, ZeroReturnCountsAsARefusalAndProgresses) {
    BatchStorage s(4096, 8);
    ASSERT_TRUE(s.batch.add(desc(1, 1), 0));
    ASSERT_TRUE(s.batch.add(desc(2, 1), 0));
    FakeSink sink({0});
    SendResult r = send_completions(s.batch, sink);
    EXPECT_EQ(r.status, SendStatus::sent);
    EXPECT_EQ(r.rejected, 1U);
    EXPECT_EQ(r.first_error, EIO);
    EXPECT_EQ(r.write_calls, 2U);
}

TEST(SendCompletions, EmptyBatchMakesNoSyscall) {
    BatchStorage s(4096, 8);
    FakeSink sink({});
    SendResult r = send_completions(s.batch, sink);
    EXPECT_EQ(r.status, SendStatus::sent);
    EXPECT_EQ(r.write_calls, 0U);
    EXPECT_TRUE(sink.calls.empty());
}

} // namespace
