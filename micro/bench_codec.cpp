// The user-space halves of the transports that run without userblk.ko, on the project's own
// code: the copy transport's wire format (transports/desc/codec.h: parsing a read() batch of
// requests, encoding and sending a write() batch of completions) and the ring transport's index
// handling (transports/ring/protocol.h, through FakeRingArea). Nanoseconds per request.
#include <cstring>
#include <vector>

#include "transports/desc/codec.h"
#include "fake_ring.h"
#include "scratch.h"

namespace userblk::micro {

namespace {

constexpr std::uint32_t batch = 32;
constexpr std::uint32_t max_io_bytes = 1 << 20;

/// A read() batch as userblk.ko writes it: batch descriptors, each WRITE followed by its data.
std::vector<std::byte> request_batch(std::uint8_t op, std::uint32_t len) {
    const std::size_t inline_len = op == USERBLK_OP_WRITE ? len : 0;
    std::vector<std::byte> out(batch * (sizeof(userblk_io_desc) + inline_len));
    std::size_t at = 0;
    for (std::uint32_t i = 0; i < batch; ++i) {
        userblk_io_desc d{};
        d.tag = static_cast<std::uint16_t>(i);
        d.op = op;
        d.gen = i;
        d.offset = std::uint64_t{i} * len;
        d.len = len;
        std::memcpy(out.data() + at, &d, sizeof(d));
        at += sizeof(d) + inline_len;
    }
    return out;
}

void copy_parse(benchmark::State& state, std::uint8_t op) {
    std::vector<std::byte> bytes = request_batch(op, 4096);
    for (auto _ : state) {
        copy::RequestParser parser(bytes, max_io_bytes);
        copy::Request req;
        std::uint32_t n = 0;
        while (parser.next(req) == copy::ParseStatus::request) {
            benchmark::DoNotOptimize(req);
            ++n;
        }
        if (n != batch) {
            state.SkipWithError("copy: the parser did not return every request of the batch");
            break;
        }
    }
    set_op_counters(state, batch, 0);
}

/// The queue fd's write(), accepting everything.
class AcceptAll final : public copy::CompletionSink {
public:
    ssize_t write(std::span<const std::byte> bytes) noexcept override {
        benchmark::DoNotOptimize(bytes.data());
        return static_cast<ssize_t>(bytes.size());
    }
};

/// Encodes batch completions (READs with 4 KiB of data reserved when with_data; the data itself
/// is not filled: that is a memcpy) and sends them through a sink that accepts all.
void copy_complete(benchmark::State& state, bool with_data) {
    const std::uint32_t data_len = with_data ? 4096 : 0;
    std::vector<std::byte> buf(batch * copy::completion_entry_size(data_len));
    std::vector<std::uint32_t> sizes(batch);
    copy::CompletionBatch cb(buf, sizes);
    AcceptAll sink;
    userblk_io_desc d{};
    d.op = USERBLK_OP_READ;
    d.len = data_len;
    for (auto _ : state) {
        cb.clear();
        for (std::uint32_t i = 0; i < batch; ++i) {
            d.tag = static_cast<std::uint16_t>(i);
            if (with_data) {
                auto area = cb.reserve_data(d, data_len);
                benchmark::DoNotOptimize(area);
                cb.commit_data(0);
            } else {
                cb.add(d, 0);
            }
        }
        copy::SendResult r = copy::send_completions(cb, sink);
        if (r.status != copy::SendStatus::sent || cb.entries() != batch) {
            state.SkipWithError("copy: the completion batch was not sent whole");
            break;
        }
    }
    set_op_counters(state, batch, 0);
}

/// n requests per pass: the kernel's half publishes them and takes the completions (a few
/// stores); the daemon's half (daemon_pass) reads, checks and answers each.
void ring_pass(benchmark::State& state, std::uint32_t n) {
    FakeRingArea area(batch, 4096);
    if (!area.problem().empty()) {
        state.SkipWithError(("ring layout: " + area.problem()).c_str());
        return;
    }
    ring::SharedRing daemon = area.daemon();
    userblk_io_desc d{};
    d.op = USERBLK_OP_READ;
    d.len = 4096;
    std::uint32_t head = 0;
    std::uint32_t cq_tail = 0;
    for (auto _ : state) {
        area.kernel_publish_batch(d, n);
        if (daemon_pass(daemon, head, cq_tail) != static_cast<int>(n)) {
            state.SkipWithError("ring: the daemon's pass did not take every request");
            break;
        }
        benchmark::DoNotOptimize(area.kernel_take(area.kernel_cq_tail()));
    }
    set_op_counters(state, n, 0);
}

} // namespace

void register_codec() {
    benchmark::RegisterBenchmark("codec/copy:parse-read:batch32", copy_parse,
                                 std::uint8_t{USERBLK_OP_READ})
        ->UseRealTime();
    benchmark::RegisterBenchmark("codec/copy:parse-write4k:batch32", copy_parse,
                                 std::uint8_t{USERBLK_OP_WRITE})
        ->UseRealTime();
    benchmark::RegisterBenchmark("codec/copy:complete:batch32", copy_complete, false)
        ->UseRealTime();
    benchmark::RegisterBenchmark("codec/copy:complete-read4k:batch32", copy_complete, true)
        ->UseRealTime();
    benchmark::RegisterBenchmark("codec/ring:pass", ring_pass, 1U)->UseRealTime();
    benchmark::RegisterBenchmark("codec/ring:pass:batch32", ring_pass, batch)->UseRealTime();
}

} // namespace userblk::micro
