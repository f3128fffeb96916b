// io_uring, the mechanism ublk is built on: a NOP (the bare cost of a submission and its
// completion) and a 4 KiB read of a tmpfs file, one at a time (submit and wait per op) and in
// batches of 32 (one io_uring_enter for 32). pread() of the same file is the syscall baseline.
#include <cerrno>
#include <cstring>

#include <liburing.h>
#include <unistd.h>

#include "scratch.h"

namespace userblk::micro {

namespace {

constexpr unsigned batch_size = 32;
constexpr std::size_t read_len = 4096;
constexpr std::size_t file_len = batch_size * read_len;

/// An io_uring instance, torn down on scope exit.
class Uring {
public:
    explicit Uring(unsigned entries) noexcept { err_ = io_uring_queue_init(entries, &ring_, 0); }
    Uring(const Uring&) = delete;
    Uring& operator=(const Uring&) = delete;
    ~Uring() {
        if (err_ == 0) {
            io_uring_queue_exit(&ring_);
        }
    }
    /// 0 or the negative errno of io_uring_queue_init.
    [[nodiscard]] int error() const noexcept { return err_; }
    io_uring* get() noexcept { return &ring_; }

private:
    io_uring ring_{};
    int err_ = 0;
};

/// Submits what is queued, waits for n completions and reaps them; false on an error or a
/// failed completion (errno set).
bool submit_and_reap(io_uring* ring, unsigned n, int expect) {
    int r = io_uring_submit_and_wait(ring, n);
    if (r < 0) {
        errno = -r;
        return false;
    }
    unsigned seen = 0;
    bool ok = true;
    while (seen < n) {
        io_uring_cqe* cqe = nullptr;
        r = io_uring_wait_cqe(ring, &cqe);
        if (r < 0) {
            errno = -r;
            return false;
        }
        if (cqe->res != expect) {
            errno = cqe->res < 0 ? -cqe->res : EIO;
            ok = false;
        }
        io_uring_cqe_seen(ring, cqe);
        ++seen;
    }
    return ok;
}

void uring_nop(benchmark::State& state, unsigned batch) {
    Uring u(batch_size * 2);
    if (u.error() != 0) {
        errno = -u.error();
        state.SkipWithError(errno_text("io_uring_queue_init").c_str());
        return;
    }
    for (auto _ : state) {
        for (unsigned i = 0; i < batch; ++i) {
            io_uring_prep_nop(io_uring_get_sqe(u.get()));
        }
        if (!submit_and_reap(u.get(), batch, 0)) {
            state.SkipWithError(errno_text("io_uring NOP").c_str());
            break;
        }
    }
    set_op_counters(state, batch, 0);
}

void uring_read(benchmark::State& state, unsigned batch) {
    if (scratch_dirs().tmpfs.empty()) {
        state.SkipWithError(scratch_dirs().tmpfs_why.c_str());
        return;
    }
    unique_fd fd = scratch_file(scratch_dirs().tmpfs, file_len);
    Mapping buf = touched_buffer(file_len);
    Uring u(batch_size * 2);
    if (!fd || u.error() != 0) {
        if (u.error() != 0) {
            errno = -u.error();
        }
        state.SkipWithError(errno_text(fd ? "io_uring_queue_init" : "tmpfs scratch file").c_str());
        return;
    }
    for (auto _ : state) {
        for (unsigned i = 0; i < batch; ++i) {
            io_uring_prep_read(io_uring_get_sqe(u.get()), fd.get(), buf.data() + i * read_len,
                               read_len, i * read_len);
        }
        if (!submit_and_reap(u.get(), batch, static_cast<int>(read_len))) {
            state.SkipWithError(errno_text("io_uring read").c_str());
            break;
        }
    }
    set_op_counters(state, batch, static_cast<std::int64_t>(read_len));
}

void tmpfs_pread(benchmark::State& state) {
    if (scratch_dirs().tmpfs.empty()) {
        state.SkipWithError(scratch_dirs().tmpfs_why.c_str());
        return;
    }
    unique_fd fd = scratch_file(scratch_dirs().tmpfs, file_len);
    Mapping buf = touched_buffer(read_len);
    if (!fd) {
        state.SkipWithError(errno_text("tmpfs scratch file").c_str());
        return;
    }
    for (auto _ : state) {
        if (::pread(fd.get(), buf.data(), read_len, 0) != static_cast<ssize_t>(read_len)) {
            state.SkipWithError(errno_text("pread").c_str());
            break;
        }
    }
    set_op_counters(state, 1, static_cast<std::int64_t>(read_len));
}

} // namespace

void register_uring() {
    benchmark::RegisterBenchmark("uring/nop", uring_nop, 1U)->UseRealTime();
    benchmark::RegisterBenchmark("uring/nop:batch32", uring_nop, batch_size)->UseRealTime();
    if (scratch_dirs().tmpfs.empty()) {
        return; // the reads need a tmpfs file; the context's tmpfs_dir says why there is none
    }
    benchmark::RegisterBenchmark("uring/read:tmpfs/4096", uring_read, 1U)->UseRealTime();
    benchmark::RegisterBenchmark("uring/read:tmpfs:batch32/4096", uring_read, batch_size)
        ->UseRealTime();
    benchmark::RegisterBenchmark("file/pread:tmpfs/4096", tmpfs_pread)->UseRealTime();
}

} // namespace userblk::micro
