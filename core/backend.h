// The Backend interface: the driver logic, shared by every transport.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "capabilities.h"
#include "mapping.h"
#include "stats.h"
#include "status.h"

namespace userblk {

class Backend;

/// What a backend can serve, probed when it is made, in the manner of nbdkit's can_write,
/// can_flush, can_trim and can_zero. `userblk add` without --features gives the device exactly
/// default_features() of it, and refuses a --features list that asks for what it cannot serve.
struct BackendServes {
    bool write = true;        ///< writes are taken (false: the device must be read-only)
    bool cache = false;       ///< a volatile cache: flush and FUA make writes durable
    bool discard = false;     ///< discard() does not answer -EOPNOTSUPP
    bool write_zeroes = true; ///< write_zeroes() works (the default writes zero blocks)
};

/// The USERBLK_F_* features a device over a backend that serves s should have: flush and fua
/// where there is a cache to flush, discard and write-zeroes where served, read-only where
/// writes are not.
std::uint64_t default_features(const BackendServes& s) noexcept;

/// Checks a --features mask against what backend `name` serves. Flush and FUA over a backend
/// without a cache are accepted (they have nothing to do); discard or write-zeroes it cannot
/// serve, or a writable device over a backend that takes no writes, is an error naming the
/// feature and what the backend serves.
Status check_features(std::uint64_t asked, const BackendServes& s, std::string_view name);

/// What a backend is created for: one device.
struct BackendConfig {
    std::uint64_t size = 0;         ///< bytes
    std::uint32_t block_size = 512; ///< logical block size
    std::uint32_t nr_queues = 1;    ///< queues that will call the backend, one thread each
    std::uint32_t max_io_bytes = 0; ///< largest request the backend will see (0: unknown)
    /// The backend's own options, from `--backend NAME:KEY=VALUE,...` (e.g. file:path=/x). A
    /// backend rejects a key it does not know with an error naming the keys it takes.
    std::map<std::string, std::string, std::less<>> options;
};

/// A backend's own per-queue state (e.g. a file backend's pipe pair). Optional.
class BackendQueueState {
public:
    virtual ~BackendQueueState() = default;
};

/// The per-queue context passed to every Backend call. Owned by one queue and used by its thread
/// only, so a backend needs no lock and no allocation per I/O for what lives here.
class BackendQueue {
public:
    /// Sets up queue id of backend: an adapter buffer of max_io_bytes (allocated up front, backed
    /// lazily), then backend.init_queue().
    static Result<BackendQueue> open(Backend& backend, unsigned id, std::uint32_t max_io_bytes,
                                     QueueStats& stats);

    [[nodiscard]] unsigned id() const noexcept { return id_; }
    [[nodiscard]] QueueStats& stats() const noexcept { return *stats_; }
    /// The shared adapter's copy buffer (max_io_bytes).
    [[nodiscard]] std::span<std::byte> buffer() const noexcept { return buffer_.bytes(); }
    [[nodiscard]] BackendQueueState* state() const noexcept { return state_.get(); }
    void set_state(std::unique_ptr<BackendQueueState> state) noexcept { state_ = std::move(state); }

private:
    BackendQueue(unsigned id, QueueStats& stats, Mapping buffer)
        : id_(id), stats_(&stats), buffer_(std::move(buffer)) {}

    unsigned id_;
    QueueStats* stats_;
    Mapping buffer_;
    std::unique_ptr<BackendQueueState> state_;
};

/// The storage behind a device. One object per device, called concurrently from one thread per
/// queue, each with its own BackendQueue. Offsets and lengths are in bytes and have been checked
/// against size() by the caller (execute()); backends check again where a bad range would corrupt
/// memory. I/O calls return 0 or a negative errno and never throw.
class Backend {
public:
    Backend() = default;
    Backend(const Backend&) = delete;
    Backend& operator=(const Backend&) = delete;
    virtual ~Backend() = default;

    /// The device size in bytes. Required.
    [[nodiscard]] virtual std::uint64_t size() const noexcept = 0;
    /// Fills dst with the bytes at off. Required.
    virtual int read(BackendQueue& q, std::uint64_t off, std::span<std::byte> dst) noexcept = 0;
    /// Stores src at off; flags are USERBLK_IO_F_* (FUA: durable on return). Required.
    virtual int write(BackendQueue& q, std::uint64_t off, std::span<const std::byte> src,
                      std::uint32_t flags) noexcept = 0;

    /// Makes completed writes durable. Optional: default succeeds (no volatile cache).
    virtual int flush(BackendQueue& q) noexcept;
    /// Drops a range; its content is undefined until rewritten. Optional: default -EOPNOTSUPP.
    virtual int discard(BackendQueue& q, std::uint64_t off, std::uint64_t len) noexcept;
    /// Makes a range read as zeros; flags USERBLK_IO_F_NOUNMAP: keep its blocks allocated (no
    /// hole). Optional: default write()s zero blocks, which keeps them.
    virtual int write_zeroes(BackendQueue& q, std::uint64_t off, std::uint64_t len,
                             std::uint32_t flags = 0) noexcept;
    /// Writes the len bytes at off into pipe_fd. Optional: default is the shared adapter, which
    /// copies through q.buffer() and counts the bytes (adapter_read_to_pipe).
    virtual int read_to_pipe(BackendQueue& q, int pipe_fd, std::uint64_t off,
                             std::uint32_t len) noexcept;
    /// Stores len bytes taken from pipe_fd at off. Optional: default is the shared adapter
    /// (adapter_write_from_pipe).
    virtual int write_from_pipe(BackendQueue& q, int pipe_fd, std::uint64_t off, std::uint32_t len,
                                std::uint32_t flags) noexcept;
    /// Whether read_to_pipe()/write_from_pipe() move the data without it entering the daemon's
    /// memory (splice to a file or socket). Transports that can use either path take the pipe
    /// path exactly when this is true. Optional: default false (the shared adapter).
    [[nodiscard]] virtual bool native_pipe() const noexcept { return false; }
    /// What this backend serves (see BackendServes). Optional: the defaults above, which match
    /// the default flush(), discard() and write_zeroes().
    [[nodiscard]] virtual BackendServes serves() const noexcept { return {}; }
    /// Sets up per-queue state (q.set_state()) before the queue's thread starts. Optional: none.
    virtual Status init_queue(BackendQueue& q);
    /// Appends key=value capability lines (after name= and summary=). Optional: none.
    virtual void describe(Capabilities& caps) const;
};

/// The shared pipe adapter: reads [off, off+len) through q.buffer() and writes it all to pipe_fd
/// (waiting in poll() if the pipe is non-blocking and full). Counts len in
/// q.stats().adapter_copied_bytes and user_data_bytes on success (the data entered user memory). len must fit q.buffer(). Returns 0 or -errno.
int adapter_read_to_pipe(Backend& backend, BackendQueue& q, int pipe_fd, std::uint64_t off,
                         std::uint32_t len) noexcept;

/// The shared pipe adapter: reads exactly len bytes from pipe_fd into q.buffer() (end of file
/// before that is -EIO) and writes them at off. Counts len like adapter_read_to_pipe.
int adapter_write_from_pipe(Backend& backend, BackendQueue& q, int pipe_fd, std::uint64_t off,
                            std::uint32_t len, std::uint32_t flags) noexcept;

} // namespace userblk
