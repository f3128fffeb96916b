// The ring transport (USERBLK_MODE_RING): each queue fd maps one area shared with userblk.ko,
// holding a submission ring of requests, a completion ring of answers and a data buffer per tag.
// The backend reads a WRITE's data from, and writes a READ's data into, the tag's buffer in
// place; the kernel copies between the buffer and the bio pages (the one copy). The only syscall
// is USERBLK_IOC_RING_ENTER, which hands over every published completion and, with
// USERBLK_RING_ENTER_WAIT, sleeps until a request is pending: one syscall per batch.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <vector>

#include "core/fault.h"
#include "transports/kmod/kmod.h"
#include "core/mapping.h"
#include "protocol.h"

namespace userblk {

/// Its registry entry.
extern const TransportEntry transport_entry_ring;

namespace ring {

/// The kernel's side of a queue as the serve loop calls it: RING_ENTER on the queue fd, or a fake
/// over ordinary memory in the tests.
class RingKernel {
public:
    RingKernel() = default;
    RingKernel(const RingKernel&) = delete;
    RingKernel& operator=(const RingKernel&) = delete;
    virtual ~RingKernel() = default;
    /// ioctl(qfd, USERBLK_IOC_RING_ENTER, flags): the requests pending (>= 0), or -errno.
    virtual long enter(unsigned flags) noexcept = 0;
};

/// What serve_available() came to.
enum class StepStatus : std::uint8_t {
    served,      ///< every request published so far was consumed (and answered where possible)
    device_gone, ///< the device died while the ring was full: stop serving, successfully
    failed,      ///< the kernel broke the contract (an index out of range); see error()
};

/// The serve loop of one queue over its mapped area. Everything it needs is allocated here, up
/// front: nothing is allocated per request.
class RingQueue final : public KmodQueueWorker {
public:
    /// Reads q.fd's layout (USERBLK_IOC_RING_LAYOUT), checks it against q.device and maps the
    /// area. poll_us > 0 selects busy-polling (see run()).
    static Result<std::unique_ptr<RingQueue>> create(KmodQueue& q, std::uint32_t poll_us,
                                                     const FaultConfig& fault = {});

    /// Serves an area that is already mapped with layout l through kernel (the tests' fake ring).
    /// Checks l as create() does, and that the indices in the area are consistent.
    static Result<std::unique_ptr<RingQueue>> attach(KmodQueue& q, Mapping area,
                                                     const userblk_ring_layout& l,
                                                     std::unique_ptr<RingKernel> kernel,
                                                     std::uint32_t poll_us,
                                                     const FaultConfig& fault = {});

    /// Spin mode: serve without system calls while requests keep coming, spinning on sq_tail
    /// with NEED_WAKEUP clear, and sleep in RING_ENTER(WAIT) only after spin_us idle. On a poll
    /// queue (poll_queue) the submitter's blk-mq poll takes the completions, so none is handed
    /// over by a syscall; on a default queue a RING_ENTER(0) per batch still hands them over.
    /// Call before run(); spin_us 0 leaves the wait or poll mode of create().
    void set_spinning(std::uint32_t spin_us, bool poll_queue) noexcept {
        spin_us_ = spin_us;
        poll_queue_ = poll_queue;
    }

    /// Serves until RING_ENTER fails with ENODEV (the device is dead, e.g. stopped or deleted),
    /// or a fatal error. See ring.cpp for the loop and its syscalls per request.
    Status run(std::stop_token stop) override;

    /// One pass without a syscall (unless the completion ring is full): takes every request
    /// published, runs each on the backend in its buffer, writes the completions and publishes
    /// cq_tail. They reach the kernel at the next RING_ENTER.
    StepStatus serve_available() noexcept;

    /// Completions published and not yet handed to the kernel by a RING_ENTER.
    [[nodiscard]] std::uint32_t unhanded() const noexcept { return unhanded_; }
    /// Why serve_available() or run() failed.
    [[nodiscard]] const Status& error() const noexcept { return error_; }

private:
    RingQueue(KmodQueue& q, Mapping area, const userblk_ring_layout& l,
              std::unique_ptr<RingKernel> kernel, std::uint32_t poll_us, const FaultConfig& fault);

    /// RING_ENTER with flags; counts it, the completions it handed over and the kernel's refusals.
    long enter(unsigned flags) noexcept;
    /// Spins on sq_tail for up to us; true if a request arrived.
    bool spin(const std::stop_token& stop, std::uint32_t us) const noexcept;
    /// serve_available() as run()'s loops take it: nullopt to go on, {} to end successfully
    /// (the device is gone), error() when serving failed.
    std::optional<Status> serve_step();
    /// run() in spin mode.
    Status run_spinning(std::stop_token stop);
    /// What run() does with a failed RING_ENTER: {} to end successfully, an error to fail,
    /// nullopt to go on.
    std::optional<Status> after_failed_enter(long r, const std::stop_token& stop);
    /// Runs one valid request on the backend, in its buffer; the completion result.
    int run_request(const userblk_io_desc& d) noexcept;
    /// Answers a request entry that failed check_request(); the completion result.
    int refuse_request(const userblk_io_desc& d, EntryCheck why) noexcept;
    /// Writes one completion, making room first if the ring is full.
    StepStatus push_completion(const userblk_io_desc& d, std::int32_t result) noexcept;
    StepStatus fail(int err, const char* what, std::uint32_t got, std::uint32_t ours) noexcept;
    void note(const char* what, int err, std::uint16_t tag) noexcept;
    class Seam;
    /// The scribble fault: garbage into one shared index or completion entry, shown to the
    /// kernel by a RING_ENTER, then our own state put back.
    void scribble() noexcept;

    KmodQueue& q_;
    Mapping area_;
    SharedRing ring_;
    std::unique_ptr<RingKernel> kernel_;
    std::uint32_t poll_us_;
    std::uint32_t spin_us_ = 0;
    bool poll_queue_ = false;
    std::uint32_t sq_head_;      ///< ours; the shared copy is for the kernel
    std::uint32_t cq_tail_;      ///< ours
    std::uint32_t cq_head_seen_; ///< the kernel's cq_head when last loaded
    std::uint32_t unhanded_ = 0;
    std::uint64_t rejected_base_;            ///< the kernel's count when we attached
    std::vector<userblk_io_desc> batch_;     ///< sq_entries: the entries of one pass
    std::vector<std::uint32_t> last_of_tag_; ///< nr_bufs: a tag's latest entry in the pass
    Status error_;
    std::uint32_t notes_ = 0; ///< diagnostics printed, capped so a broken kernel cannot flood
    FaultInjector fault_;
};

} // namespace ring
} // namespace userblk
