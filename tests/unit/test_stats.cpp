// Statistics: counters, batch histograms, aggregation and the JSON document.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/stats.h"

namespace {

using namespace userblk;

TEST(Stats, BatchBucketsAreLog2AndCapped) {
    EXPECT_EQ(batch_bucket(1), 0U);
    EXPECT_EQ(batch_bucket(2), 1U);
    EXPECT_EQ(batch_bucket(3), 1U);
    EXPECT_EQ(batch_bucket(4), 2U);
    EXPECT_EQ(batch_bucket(7), 2U);
    EXPECT_EQ(batch_bucket(512), 9U);
    EXPECT_EQ(batch_bucket(1023), 9U);
    EXPECT_EQ(batch_bucket(1024), 10U);
    EXPECT_EQ(batch_bucket(1U << 20), kBatchBuckets - 1);
}

TEST(Stats, CountRequestByOp) {
    QueueStats q;
    q.count_request(USERBLK_OP_READ, 4096);
    q.count_request(USERBLK_OP_READ, 512);
    q.count_request(USERBLK_OP_WRITE_ZEROES, 1 << 20);
    q.count_request(200, 7);
    StatsSnapshot s = q.snapshot();
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::read)], 2U);
    EXPECT_EQ(s.bytes[static_cast<std::size_t>(OpKind::read)], 4608U);
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::write_zeroes)], 1U);
    EXPECT_EQ(s.bytes[static_cast<std::size_t>(OpKind::write_zeroes)], 1U << 20);
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::other)], 1U);
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::write)], 0U);
}

TEST(Stats, DeviceTotalSumsQueuesAndKeepsTheLargestBatch) {
    DeviceStats dev(2);
    dev.queue(0).read_calls.add(3);
    dev.queue(1).read_calls.add(4);
    QueueStats::count_batch(dev.queue(0).request_batches, 5);
    QueueStats::count_batch(dev.queue(0).request_batches, 1);
    QueueStats::count_batch(dev.queue(1).request_batches, 32);
    dev.queue(1).adapter_copied_bytes.add(4096);
    StatsSnapshot t = dev.total();
    EXPECT_EQ(t.read_calls, 7U);
    EXPECT_EQ(t.request_batches.count, 3U);
    EXPECT_EQ(t.request_batches.entries, 38U);
    EXPECT_EQ(t.request_batches.max, 32U);
    EXPECT_EQ(t.request_batches.hist[0], 1U);
    EXPECT_EQ(t.request_batches.hist[2], 1U);
    EXPECT_EQ(t.request_batches.hist[5], 1U);
    EXPECT_EQ(t.adapter_copied_bytes, 4096U);
}

TEST(Stats, JsonDocumentCarriesEveryCounter) {
    DeviceStats dev(2);
    dev.queue(0).count_request(USERBLK_OP_WRITE, 8192);
    dev.queue(1).count_request(USERBLK_OP_READ, 4096);
    dev.queue(1).io_errors.add();
    dev.queue(1).protocol_errors.add(2);
    dev.queue(0).rejected_completions.add(3);
    dev.queue(0).write_calls.add(9);
    dev.queue(1).wait_calls.add(1);
    dev.queue(0).user_data_bytes.add(1024);
    dev.queue(1).user_data_bytes.add(3072);
    QueueStats::count_batch(dev.queue(1).completion_batches, 2);
    DeviceInfo info;
    info.id = 3;
    info.path = "/dev/userblk3";
    info.size = 1 << 30;
    info.nr_queues = 2;
    info.queue_depth = 64;
    info.block_size = 512;
    info.max_io_bytes = 512 * 1024;
    info.features = USERBLK_F_FLUSH;

    auto j = nlohmann::json::parse(stats_document(dev, info, "copy", "ram"));
    EXPECT_EQ(j["schema"], "userblk-stats/1");
    EXPECT_EQ(j["transport"], "copy");
    EXPECT_EQ(j["backend"], "ram");
    EXPECT_EQ(j["device"]["id"], 3);
    EXPECT_EQ(j["device"]["path"], "/dev/userblk3");
    EXPECT_EQ(j["device"]["size_bytes"], 1 << 30);
    EXPECT_EQ(j["device"]["features"], "flush");
    ASSERT_EQ(j["queues"].size(), 2U);
    EXPECT_EQ(j["queues"][1]["queue"], 1);
    EXPECT_EQ(j["queues"][0]["requests"]["write"], 1);
    EXPECT_EQ(j["queues"][0]["bytes"]["write"], 8192);
    EXPECT_EQ(j["queues"][1]["requests"]["read"], 1);
    const auto& t = j["total"];
    EXPECT_EQ(t["requests"]["total"], 2);
    EXPECT_EQ(t["bytes"]["total"], 12288);
    EXPECT_EQ(t["errors"]["io"], 1);
    EXPECT_EQ(t["errors"]["protocol"], 2);
    EXPECT_EQ(t["errors"]["rejected_completions"], 3);
    EXPECT_EQ(t["syscalls"]["write"], 9);
    EXPECT_EQ(t["syscalls"]["wait"], 1);
    EXPECT_EQ(t["completion_batches"]["count"], 1);
    EXPECT_EQ(t["completion_batches"]["entries"], 2);
    ASSERT_EQ(t["completion_batches"]["hist_log2"].size(), kBatchBuckets);
    EXPECT_EQ(t["completion_batches"]["hist_log2"][1], 1);
    EXPECT_EQ(t["adapter_copied_bytes"], 0);
    EXPECT_EQ(t["user_data_bytes"], 4096);
}

TEST(Stats, QueuesDoNotShareCacheLines) {
    DeviceStats dev(2);
    auto a = reinterpret_cast<std::uintptr_t>(&dev.queue(0));
    auto b = reinterpret_cast<std::uintptr_t>(&dev.queue(1));
    EXPECT_EQ(a % 64, 0U);
    EXPECT_GE(b - a, 64U);
}

} // namespace
