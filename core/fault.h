// The daemon's fault-injecting mode (`userblk add --fault KIND,... --fault-seed N`): a daemon
// that lies to userblk.ko on purpose, to prove that the kernel survives any user space
// (docs/faults.md). The kinds, their parsing, and FaultInjector, the one hook every userblk.ko
// transport calls where it completes a request. Without --fault the hook costs one predictable
// branch (armed() is false); the decisions are pure functions of (seed, queue, completion
// number), so a run is reproducible and the selection is unit-tested without a kernel.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <uapi/userblk.h>

namespace userblk {

/// What a faulty daemon does at a completion. The names are the --fault values.
enum class FaultKind : std::uint8_t {
    drop,       ///< "drop": never complete the request
    twice,      ///< "double": complete the same tag twice (same batch, or the next one)
    wrong_tag,  ///< "wrong-tag": also complete a tag that is not outstanding or out of range
    short_len,  ///< "short": a READ handed back with fewer bytes than asked
    bad_result, ///< "bad-result": result codes out of range (first), or odd errnos (instead)
    stall,      ///< "stall": stop serving the queue for longer than the request timeout
    exit,       ///< "exit": exit the process mid-batch, with requests outstanding
    scribble,   ///< "scribble": garbage in the shared ring's indices and entries (ring only)
};

inline constexpr std::uint32_t kFaultKinds = 8;

/// A set of FaultKind, bit (1 << kind).
using FaultMask = std::uint32_t;

constexpr FaultMask fault_bit(FaultKind k) noexcept {
    return FaultMask{1} << static_cast<unsigned>(k);
}

/// Every kind but scribble: what copy, pipe and splice can inject.
inline constexpr FaultMask kDescFaults = (fault_bit(FaultKind::scribble) - 1);
/// What the ring can inject: it has no length field to lie about (short).
inline constexpr FaultMask kRingFaults =
    (kDescFaults & ~fault_bit(FaultKind::short_len)) | fault_bit(FaultKind::scribble);

/// The exit status of a daemon that the exit fault ended.
inline constexpr int kFaultExitStatus = 3;

/// The --fault name of k ("drop", "double", ...).
std::string_view fault_name(FaultKind k) noexcept;
/// The kinds of mask, comma-separated in kind order ("none" for 0).
std::string format_faults(FaultMask mask);
/// Parses "drop,double" ("all" is every kind); nullopt on an unknown name, stored in *bad.
std::optional<FaultMask> parse_faults(std::string_view list, std::string* bad = nullptr);

/// The fault mode of a device, as `userblk add` was asked.
struct FaultConfig {
    FaultMask kinds = 0;     ///< nothing injected when 0
    std::uint64_t seed = 0;  ///< --fault-seed
    double rate = 0.02;      ///< --fault-rate: the share of completions that get a fault
    std::uint32_t skip = 64; ///< --fault-skip: completions per queue served before any fault
};

/// splitmix64: the mixing function of the decisions (public for the tests).
constexpr std::uint64_t fault_mix(std::uint64_t x) noexcept {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/// The completion seam: what a transport lets the fault mode lie through. The transport decides
/// how a completion travels (an entry in a write() batch, a slot of the completion ring); the
/// lies themselves are FaultInjector::complete()'s, the same for every transport. A method that
/// returns false (or nullopt) means the queue cannot go on; the transport keeps the reason.
class FaultSeam {
public:
    FaultSeam() = default;
    FaultSeam(const FaultSeam&) = delete;
    FaultSeam& operator=(const FaultSeam&) = delete;

    /// The queue depth: tags at or above it are out of range.
    [[nodiscard]] virtual std::uint32_t depth() const noexcept = 0;
    /// Adds a completion of d (its tag and generation) with res and no data.
    virtual bool send(const userblk_io_desc& d, std::int32_t res) noexcept = 0;
    /// Hands every completion added so far to the kernel.
    virtual bool flush() noexcept = 0;
    /// Runs d and adds its real completion, with its data where the transport sends data with
    /// it; short_read: a READ answered with fewer bytes than asked (the short fault, offered only
    /// by transports whose completions carry a length). Returns the result it carried.
    virtual std::optional<std::int32_t> answer(const userblk_io_desc& d,
                                               bool short_read) noexcept = 0;
    /// Fails d with res instead of running it. A transport whose WRITE data waits in a channel
    /// that the request's completion must empty (a tag's pipe) overrides it.
    virtual bool fail(const userblk_io_desc& d, std::int32_t res) noexcept { return send(d, res); }
    /// Scribbles on state shared with the kernel (the scribble fault; the ring only).
    virtual void scribble() noexcept {}

protected:
    ~FaultSeam() = default;
};

/// The per-queue hook. A transport asks pick() once per completion it is about to send; the
/// answer depends only on (seed, queue, the number of earlier pick() calls), never on timing,
/// so the n-th completion of a queue gets the same fault in every run of a seed. Allocates
/// nothing; logs the first few faults it injects and a count per kind at destruction.
class FaultInjector {
public:
    /// name prefixes messages ("copy"); mask is cfg.kinds, already checked against what the
    /// transport supports.
    FaultInjector(const FaultConfig& cfg, std::string_view name, unsigned queue,
                  std::uint32_t timeout_ms) noexcept;
    FaultInjector(const FaultInjector&) = delete;
    FaultInjector& operator=(const FaultInjector&) = delete;
    ~FaultInjector();

    /// Whether any fault may be injected: the one branch the hot path takes without --fault.
    [[nodiscard]] bool armed() const noexcept { return kinds_ != 0; }

    /// Completes d through seam under the fault mode: the next completion's fault (pick()), if
    /// any, acted out around the real answer. drop sends nothing; stall and exit flush first;
    /// wrong-tag sends -EIO for a tag or generation that is not d's, then the real answer;
    /// bad-result sends a result the kernel must refuse and then the real answer, or fails d with
    /// an odd errno; double sends the answer twice, now or at the start of the next batch;
    /// scribble answers and then scribbles; short answers a READ short. False when the seam
    /// said the queue cannot go on.
    bool complete(const userblk_io_desc& d, FaultSeam& seam) noexcept;
    /// At the start of a batch: sends the duplicate a double fault kept for it, if any.
    bool begin_batch(FaultSeam& seam) noexcept;

    /// The fault for the next completion (on tag), or nullopt; counted and logged when given.
    std::optional<FaultKind> pick(std::uint16_t tag) noexcept;
    /// A reproducible value for the variant of a fault (the next of this queue's stream).
    std::uint64_t next() noexcept;
    /// A value below n (n > 0).
    std::uint32_t below(std::uint32_t n) noexcept { return static_cast<std::uint32_t>(next() % n); }

    /// A result outside 0 / -1..-4095 that the kernel must refuse (1, 4096, INT_MAX, -4096,
    /// INT_MIN, ...).
    std::int32_t invalid_result() noexcept;
    /// A valid but unusual error result the request must fail with (-4095, -ENOSPC, ...).
    std::int32_t odd_errno() noexcept;
    /// Sleeps past the request timeout (twice it, plus a second): the stall fault.
    void stall() const noexcept;
    /// Ends the process at once, without deleting the device (kFaultExitStatus).
    [[noreturn]] void exit_now() const noexcept;

    /// Completions asked about so far, and faults injected per kind.
    [[nodiscard]] std::uint64_t completions() const noexcept { return n_; }
    [[nodiscard]] std::uint64_t injected(FaultKind k) const noexcept {
        return counts_[static_cast<unsigned>(k)];
    }

    /// Whether completion number n (0-based) of queue gets a fault under cfg, and which; the
    /// pure decision behind pick().
    static std::optional<FaultKind> decide(const FaultConfig& cfg, unsigned queue,
                                           std::uint64_t n) noexcept;

private:
    FaultConfig cfg_;
    FaultMask kinds_;
    char name_[16] = {};
    unsigned queue_;
    std::uint32_t timeout_ms_;
    std::uint64_t n_ = 0;
    std::uint64_t stream_ = 0;
    std::uint64_t counts_[kFaultKinds] = {};
    std::uint32_t logged_ = 0;
    std::optional<userblk_io_desc> dup_; ///< a duplicate completion owed to the next batch
};

} // namespace userblk
