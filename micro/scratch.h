// What the benchmarks share: where scratch files go (a tmpfs and a disk filesystem), scratch
// files and buffers, and the counters every benchmark sets so that scripts read per-operation
// costs from the JSON instead of from benchmark names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <benchmark/benchmark.h>

#include "core/mapping.h"
#include "core/unique_fd.h"

namespace userblk::micro {

/// Folders for scratch files; empty with a reason when this machine has none of that kind.
struct ScratchDirs {
    std::string tmpfs;     ///< a writable tmpfs folder
    std::string tmpfs_why; ///< why tmpfs is empty
    std::string disk;      ///< a writable folder on a block-device filesystem
    std::string disk_fs;   ///< its filesystem type (ext4, xfs, ...)
    std::string disk_why;  ///< why disk is empty
};

/// Finds the folders: the given ones if not empty (checked), else the usual places.
ScratchDirs find_scratch_dirs(const std::string& tmpfs, const std::string& disk);
/// The folders main() found; set once before the benchmarks run.
const ScratchDirs& scratch_dirs() noexcept;
void set_scratch_dirs(ScratchDirs dirs);

/// The filesystem type of path ("tmpfs", "ext4", "9p", ... or "0x<magic>"), empty on error.
std::string fs_type(const std::string& path);

/// An unlinked scratch file in dir of len bytes written (not holes), or invalid with errno set.
unique_fd scratch_file(const std::string& dir, std::size_t len);

/// A page-aligned buffer of len bytes, every page written once; empty on failure.
Mapping touched_buffer(std::size_t len);

/// "what: strerror(errno)", for SkipWithError.
std::string errno_text(const std::string& what);

/// The counters every benchmark sets: ops done per iteration (a round trip, a batch of 32
/// descriptors, one copy of `bytes`) and bytes moved per op (0 when no data moves). Scripts take
/// ns per op = real_time / ops.
void set_op_counters(benchmark::State& state, std::int64_t ops_per_iteration,
                     std::int64_t bytes_per_op);

/// Registration, one function per source file (called from main()).
void register_memcpy();
void register_splice();
void register_wakeup();
void register_uring();
void register_codec();

/// The I/O sizes of the data benchmarks: 4 KiB to 1 MiB in steps of 4x.
inline constexpr std::int64_t io_size_min = 4096;
inline constexpr std::int64_t io_size_max = 1 << 20;
inline constexpr int io_step = 4;

} // namespace userblk::micro
