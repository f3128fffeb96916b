#include "stats.h"

#include <algorithm>
#include <bit>

#include <nlohmann/json.hpp>

namespace userblk {

OpKind op_kind(std::uint8_t op) noexcept {
    switch (op) {
    case USERBLK_OP_READ:
        return OpKind::read;
    case USERBLK_OP_WRITE:
        return OpKind::write;
    case USERBLK_OP_FLUSH:
        return OpKind::flush;
    case USERBLK_OP_DISCARD:
        return OpKind::discard;
    case USERBLK_OP_WRITE_ZEROES:
        return OpKind::write_zeroes;
    default:
        return OpKind::other;
    }
}

std::string_view op_kind_name(OpKind kind) noexcept {
    switch (kind) {
    case OpKind::read:
        return "read";
    case OpKind::write:
        return "write";
    case OpKind::flush:
        return "flush";
    case OpKind::discard:
        return "discard";
    case OpKind::write_zeroes:
        return "write_zeroes";
    case OpKind::other:
        break;
    }
    return "other";
}

std::size_t batch_bucket(std::uint64_t entries) noexcept {
    if (entries == 0) {
        return 0;
    }
    auto bucket = static_cast<std::size_t>(std::bit_width(entries) - 1);
    return std::min(bucket, kBatchBuckets - 1);
}

namespace {

void snapshot_batches(BasicBatchStats<std::uint64_t>& out, const BasicBatchStats<Counter>& in) {
    out.count = in.count.get();
    out.entries = in.entries.get();
    out.max = in.max.get();
    for (std::size_t i = 0; i < kBatchBuckets; ++i) {
        out.hist[i] = in.hist[i].get();
    }
}

void add_batches(BasicBatchStats<std::uint64_t>& into, const BasicBatchStats<std::uint64_t>& from) {
    into.count += from.count;
    into.entries += from.entries;
    into.max = std::max(into.max, from.max);
    for (std::size_t i = 0; i < kBatchBuckets; ++i) {
        into.hist[i] += from.hist[i];
    }
}

nlohmann::ordered_json batches_json(const BasicBatchStats<std::uint64_t>& b) {
    return {{"count", b.count}, {"entries", b.entries}, {"max", b.max}, {"hist_log2", b.hist}};
}

nlohmann::ordered_json by_op_json(const std::array<std::uint64_t, kOpKinds>& values) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < kOpKinds; ++i) {
        j[std::string(op_kind_name(static_cast<OpKind>(i)))] = values[i];
        total += values[i];
    }
    j["total"] = total;
    return j;
}

} // namespace

StatsSnapshot QueueStats::snapshot() const noexcept {
    StatsSnapshot s;
    for (std::size_t i = 0; i < kOpKinds; ++i) {
        s.requests[i] = requests[i].get();
        s.bytes[i] = bytes[i].get();
    }
    s.io_errors = io_errors.get();
    s.protocol_errors = protocol_errors.get();
    s.rejected_completions = rejected_completions.get();
    s.read_calls = read_calls.get();
    s.write_calls = write_calls.get();
    s.wait_calls = wait_calls.get();
    s.data_calls = data_calls.get();
    s.user_data_bytes = user_data_bytes.get();
    s.adapter_copied_bytes = adapter_copied_bytes.get();
    snapshot_batches(s.request_batches, request_batches);
    snapshot_batches(s.completion_batches, completion_batches);
    return s;
}

void accumulate(StatsSnapshot& into, const StatsSnapshot& from) noexcept {
    for (std::size_t i = 0; i < kOpKinds; ++i) {
        into.requests[i] += from.requests[i];
        into.bytes[i] += from.bytes[i];
    }
    into.io_errors += from.io_errors;
    into.protocol_errors += from.protocol_errors;
    into.rejected_completions += from.rejected_completions;
    into.read_calls += from.read_calls;
    into.write_calls += from.write_calls;
    into.wait_calls += from.wait_calls;
    into.data_calls += from.data_calls;
    into.user_data_bytes += from.user_data_bytes;
    into.adapter_copied_bytes += from.adapter_copied_bytes;
    add_batches(into.request_batches, from.request_batches);
    add_batches(into.completion_batches, from.completion_batches);
}

nlohmann::ordered_json to_json(const StatsSnapshot& s) {
    return {
        {"requests", by_op_json(s.requests)},
        {"bytes", by_op_json(s.bytes)},
        {"errors",
         {{"io", s.io_errors},
          {"protocol", s.protocol_errors},
          {"rejected_completions", s.rejected_completions}}},
        {"syscalls", {{"read", s.read_calls}, {"write", s.write_calls}, {"wait", s.wait_calls},
                      {"data", s.data_calls}}},
        {"request_batches", batches_json(s.request_batches)},
        {"completion_batches", batches_json(s.completion_batches)},
        {"user_data_bytes", s.user_data_bytes},
        {"adapter_copied_bytes", s.adapter_copied_bytes},
    };
}

StatsSnapshot DeviceStats::total() const noexcept {
    StatsSnapshot sum;
    for (const auto& q : queues_) {
        accumulate(sum, q.snapshot());
    }
    return sum;
}

std::string stats_document(const DeviceStats& stats, const DeviceInfo& info,
                           std::string_view transport, std::string_view backend) {
    nlohmann::ordered_json queues = nlohmann::ordered_json::array();
    for (std::size_t i = 0; i < stats.size(); ++i) {
        nlohmann::ordered_json q = to_json(stats.queue(i).snapshot());
        q["queue"] = i;
        queues.push_back(std::move(q));
    }
    nlohmann::ordered_json doc = {
        {"schema", "userblk-stats/1"},
        {"transport", transport},
        {"backend", backend},
        {"device",
         {{"id", info.id},
          {"path", info.path},
          {"size_bytes", info.size},
          {"block_size", info.block_size},
          {"queues", info.nr_queues},
          {"queue_depth", info.queue_depth},
          {"max_io_bytes", info.max_io_bytes},
          {"timeout_ms", info.timeout_ms},
          {"features", format_features(info.features)}}},
        {"total", to_json(stats.total())},
        {"queues", std::move(queues)},
    };
    return doc.dump(2) + "\n";
}

} // namespace userblk
