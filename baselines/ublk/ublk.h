// The ublk baseline: Linux's upstream ublk_drv (built out of tree from linux-source-6.1 where the
// kernel lacks it) served by our own ublk server on the same Backend objects as every transport.
// One thread and one io_uring per queue: UBLK_IO_FETCH_REQ once per tag, then each answer goes
// back in a UBLK_IO_COMMIT_AND_FETCH_REQ that also waits for the tag's next request; every
// io_uring_enter submits the answers of a batch and waits for the next requests. Data moves through
// a buffer per tag in the daemon, which the kernel copies to and from the bio pages. See
// docs/ublk.md for what ublk_drv 6.1 does when the daemon dies or stalls.
#pragma once

#include <cstdint>
#include <memory>
#include <stop_token>
#include <vector>

#include "control.h"
#include "core/backend.h"
#include "core/mapping.h"
#include "core/transport.h"

namespace userblk {

/// Its registry entry.
extern const TransportEntry transport_entry_ublk;

/// The registry's delete hook: DEL_DEV of ublk device id from outside its daemon.
Status remove_ublk_device(std::uint32_t id);

namespace ublk {

/// What a queue's serve loop works on; lives as long as the device.
struct QueueContext {
    std::uint16_t id;            ///< queue index
    int char_fd;                 ///< /dev/ublkc<id>
    const DeviceInfo& device;    ///< values in force (ADD_DEV's answer)
    Backend& backend;            ///< the device's backend
    BackendQueue& backend_queue; ///< this queue's backend context
    QueueStats& stats;           ///< this queue's statistics
};

/// One queue: its io_uring, the mapping of its request descriptors and a buffer per tag, all set
/// up before its thread starts; nothing is allocated per request.
class UblkQueue {
public:
    /// Maps queue q.id's descriptors from q.char_fd, allocates the buffers (depth x max I/O,
    /// backed lazily) and sets up an io_uring of depth entries.
    static Result<std::unique_ptr<UblkQueue>> create(const QueueContext& q);

    /// On the queue's own thread (ublk_drv takes every command of a queue from one task): submits
    /// UBLK_IO_FETCH_REQ for every tag and calls fetched() with the outcome (START_DEV may follow
    /// only once every queue fetched), then serves requests until every tag is aborted (the device
    /// was stopped or deleted: success) or the kernel refuses a command (failure).
    template <class Fetched>
    Status run(Fetched&& fetched) {
        Status st = fetch_all();
        fetched(st);
        return st.ok() ? serve() : st;
    }

private:
    UblkQueue(const QueueContext& q, Mapping descs, Mapping buffers, std::unique_ptr<Uring> ring);

    Status fetch_all();
    Status serve();
    /// Handles one CQE; false (with error_ set) when the kernel refused a command.
    bool handle(const io_uring_cqe& cqe);
    /// Runs the request in tag's descriptor; the result COMMIT_AND_FETCH_REQ carries.
    std::int32_t run_request(std::uint16_t tag) noexcept;
    /// An SQE for the next command, submitting what is queued if the ring is full.
    io_uring_sqe* next_sqe() noexcept;
    [[nodiscard]] std::uint64_t buffer_addr(std::uint16_t tag) const noexcept;
    void note(const char* what, std::uint16_t tag, int err) noexcept;

    QueueContext q_;
    Mapping descs_;
    Mapping buffers_;
    std::unique_ptr<Uring> ring_;
    std::uint32_t buf_size_;
    std::vector<std::uint8_t> aborted_; ///< per tag: no request will come any more
    std::uint32_t nr_aborted_ = 0;
    std::uint32_t queued_ = 0; ///< SQEs prepared and not yet submitted
    Status error_;
    std::uint32_t notes_ = 0;
};

} // namespace ublk
} // namespace userblk
