// memcpy bandwidth from 4 KiB to 1 MiB: the cost of the one copy a transport makes (copy, ring,
// pipe all copy once in the kernel, and a backend copies again in user space); and memset, the
// null backend's zero-fill of a read. Under TCG both are dear where glibc picks a rep movsb or
// rep stosb (2 KiB and more on a CPU that reports ERMS): docs/platform.md.
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

void memset_bw(benchmark::State& state) {
    const auto len = static_cast<std::size_t>(state.range(0));
    Mapping dst = touched_buffer(len);
    if (dst.size() < len) {
        state.SkipWithError("memset: cannot map the buffer");
        return;
    }
    for (auto _ : state) {
        std::memset(dst.data(), 0, len);
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
    benchmark::RegisterBenchmark("memset", memset_bw)
        ->RangeMultiplier(io_step)
        ->Range(io_size_min, io_size_max)
        ->UseRealTime();
}

} // namespace userblk::micro
