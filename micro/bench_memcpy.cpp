// memcpy bandwidth from 4 KiB to 1 MiB: the cost of the one copy a transport makes (copy, ring,
// pipe all copy once in the kernel, and a backend copies again in user space).
#include <cstring>

#include "scratch.h"

namespace userblk::micro {

namespace {

void memcpy_bw(benchmark::State& state) {
    const auto len = static_cast<std::size_t>(state.range(0));
    Mapping src = touched_buffer(len);
    Mapping dst = touched_buffer(len);
    if (dst.size() < len || src.size() < len) {
        state.SkipWithError("memcpy: cannot map the buffers");
        return;
    }
    for (auto _ : state) {
        std::memcpy(dst.data(), src.data(), len);
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
    }
    set_op_counters(state, 1, state.range(0));
}

} // namespace

void register_memcpy() {
    benchmark::RegisterBenchmark("memcpy", memcpy_bw)
        ->RangeMultiplier(io_step)
        ->Range(io_size_min, io_size_max)
        ->UseRealTime();
}

} // namespace userblk::micro
