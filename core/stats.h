// Per-queue statistics, aggregated per device and written as JSON for the benchmark harness.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "config.h"

namespace userblk {

/// Request operations as counted; `other` is any op this build does not know.
enum class OpKind : std::uint8_t { read, write, flush, discard, write_zeroes, other };
inline constexpr std::size_t kOpKinds = 6;

/// The OpKind of a uapi USERBLK_OP_* value.
OpKind op_kind(std::uint8_t op) noexcept;
/// "read", "write", "flush", "discard", "write_zeroes", "other".
std::string_view op_kind_name(OpKind kind) noexcept;

/// Batch sizes are counted in log2 buckets: bucket k holds sizes 2^k .. 2^(k+1)-1, and the last
/// bucket everything from 2^(kBatchBuckets-1) up (1, 2-3, 4-7, ..., 512-1023, >=1024).
inline constexpr std::size_t kBatchBuckets = 11;
std::size_t batch_bucket(std::uint64_t entries) noexcept;

/// A counter written by one thread only (its queue's) and readable from any thread at any time.
/// Plain loads and stores (no locked instruction) on the hot path.
class Counter {
public:
    void add(std::uint64_t n = 1) noexcept {
        value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    void raise_to(std::uint64_t n) noexcept {
        if (n > value_.load(std::memory_order_relaxed)) {
            value_.store(n, std::memory_order_relaxed);
        }
    }
    [[nodiscard]] std::uint64_t get() const noexcept {
        return value_.load(std::memory_order_relaxed);
    }

private:
    std::atomic<std::uint64_t> value_{0};
};

/// How requests or completions were grouped per syscall.
template <class C>
struct BasicBatchStats {
    C count{};                           ///< batches
    C entries{};                         ///< entries in all batches
    C max{};                             ///< largest batch
    std::array<C, kBatchBuckets> hist{}; ///< batches per log2 size bucket
};

/// The statistics of one queue (C = Counter) or a snapshot or sum of them (C = uint64_t).
template <class C>
struct BasicStats {
    std::array<C, kOpKinds> requests{}; ///< requests by OpKind
    std::array<C, kOpKinds> bytes{};    ///< bytes by OpKind (the request's len)
    C io_errors{};                      ///< requests answered with an error result
    C protocol_errors{};      ///< malformed input from the kernel (entries dropped or failed)
    C rejected_completions{}; ///< completion entries the kernel refused (stale, unknown tag)
    C read_calls{};           ///< read()/readv() syscalls on the queue fd
    C write_calls{};          ///< write()/writev() syscalls on the queue fd
    C wait_calls{};           ///< other syscalls to wait or wake (poll, ioctl), per transport
    C data_calls{};           ///< syscalls that move request data besides the queue fd's
                              ///< (splice, pread, pwrite on a data fd or a pipe)
    C user_data_bytes{};      ///< request data that entered the daemon's memory (WRITE data
                              ///< received, READ data sent), by the transport or the pipe
                              ///< adapter; 0 when data only passes through pipes in the kernel
    C adapter_copied_bytes{}; ///< of which the shared pipe adapter copied (no native pipe path)
    BasicBatchStats<C> request_batches{};    ///< requests per received batch
    BasicBatchStats<C> completion_batches{}; ///< completions per sent batch
};

using StatsSnapshot = BasicStats<std::uint64_t>;

/// One queue's live statistics, updated by the queue's thread only. Cache-line aligned so queues
/// do not share lines.
struct alignas(64) QueueStats : BasicStats<Counter> {
    /// Counts one request of op with len bytes.
    void count_request(std::uint8_t op, std::uint64_t len) noexcept {
        auto k = static_cast<std::size_t>(op_kind(op));
        requests[k].add();
        bytes[k].add(len);
    }
    /// Counts one batch of n entries in b.
    static void count_batch(BasicBatchStats<Counter>& b, std::uint64_t n) noexcept {
        b.count.add();
        b.entries.add(n);
        b.max.raise_to(n);
        b.hist[batch_bucket(n)].add();
    }
    [[nodiscard]] StatsSnapshot snapshot() const noexcept;
};

/// Adds from into into (max takes the larger value).
void accumulate(StatsSnapshot& into, const StatsSnapshot& from) noexcept;

/// The JSON object of one snapshot (schema in docs: requests, bytes, errors, syscalls,
/// request_batches, completion_batches, user_data_bytes, adapter_copied_bytes).
nlohmann::ordered_json to_json(const StatsSnapshot& s);

/// The statistics of a device: one QueueStats per queue.
class DeviceStats {
public:
    explicit DeviceStats(std::size_t nr_queues) : queues_(nr_queues) {}

    [[nodiscard]] std::size_t size() const noexcept { return queues_.size(); }
    [[nodiscard]] QueueStats& queue(std::size_t i) noexcept { return queues_[i]; }
    [[nodiscard]] const QueueStats& queue(std::size_t i) const noexcept { return queues_[i]; }
    /// The sum over all queues.
    [[nodiscard]] StatsSnapshot total() const noexcept;

private:
    std::vector<QueueStats> queues_;
};

/// The document written by `userblk add --stats-json FILE`:
/// {"schema": "userblk-stats/1", "transport", "backend", "device": {...}, "total": {...},
///  "queues": [{"queue": 0, ...}, ...]}. Values as counted, never rounded.
std::string stats_document(const DeviceStats& stats, const DeviceInfo& info,
                           std::string_view transport, std::string_view backend);

} // namespace userblk
