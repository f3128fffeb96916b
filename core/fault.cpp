#include "fault.h"

#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <string>
#include <thread>

#include "log.h"

namespace userblk {

namespace {

constexpr std::array<std::string_view, kFaultKinds> kNames = {
    "drop", "double", "wrong-tag", "short", "bad-result", "stall", "exit", "scribble"};

constexpr std::uint32_t kMaxLogged = 8;

// Separate streams from one seed: the decisions, and each queue's variants.
constexpr std::uint64_t kDecide = 0x6465636964650000ULL;
constexpr std::uint64_t kStream = 0x73747265616d0000ULL;

std::uint64_t key(std::uint64_t seed, std::uint64_t salt, unsigned queue) noexcept {
    return fault_mix(seed ^ salt ^ (std::uint64_t{queue} << 32));
}

} // namespace

std::string_view fault_name(FaultKind k) noexcept {
    return kNames[static_cast<unsigned>(k)];
}

std::string format_faults(FaultMask mask) {
    std::string out;
    for (unsigned k = 0; k < kFaultKinds; ++k) {
        if ((mask & (FaultMask{1} << k)) != 0) {
            out += (out.empty() ? "" : ",") + std::string(kNames[k]);
        }
    }
    return out.empty() ? "none" : out;
}

std::optional<FaultMask> parse_faults(std::string_view list, std::string* bad) {
    FaultMask mask = 0;
    while (!list.empty()) {
        std::size_t comma = list.find(',');
        std::string_view name = list.substr(0, comma);
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
        if (name.empty() || name == "none") {
            continue;
        }
        if (name == "all") {
            mask |= (FaultMask{1} << kFaultKinds) - 1;
            continue;
        }
        unsigned k = 0;
        while (k < kFaultKinds && kNames[k] != name) {
            ++k;
        }
        if (k == kFaultKinds) {
            if (bad != nullptr) {
                *bad = std::string(name);
            }
            return std::nullopt;
        }
        mask |= FaultMask{1} << k;
    }
    return mask;
}

FaultInjector::FaultInjector(const FaultConfig& cfg, std::string_view name, unsigned queue,
                             std::uint32_t timeout_ms) noexcept
    : cfg_(cfg), kinds_(cfg.kinds), queue_(queue), timeout_ms_(timeout_ms),
      stream_(key(cfg.seed, kStream, queue)) {
    name.copy(name_, sizeof(name_) - 1);
}

FaultInjector::~FaultInjector() {
    if (kinds_ == 0) {
        return;
    }
    std::uint64_t total = 0;
    for (std::uint64_t c : counts_) {
        total += c;
    }
    log_error("fault: %s: queue %u: %llu faults injected in %llu completions (seed %llu)", name_,
              queue_, static_cast<unsigned long long>(total), static_cast<unsigned long long>(n_),
              static_cast<unsigned long long>(cfg_.seed));
}

std::optional<FaultKind> FaultInjector::decide(const FaultConfig& cfg, unsigned queue,
                                               std::uint64_t n) noexcept {
    if (cfg.kinds == 0 || n < cfg.skip) {
        return std::nullopt;
    }
    std::uint64_t h = fault_mix(key(cfg.seed, kDecide, queue) ^ n);
    // The top 53 bits as a uniform number in [0, 1).
    double u = static_cast<double>(h >> 11) * 0x1.0p-53;
    if (!(u < cfg.rate)) {
        return std::nullopt;
    }
    // Among the configured kinds, uniformly, from the low bits.
    unsigned count = static_cast<unsigned>(__builtin_popcount(cfg.kinds));
    unsigned want = static_cast<unsigned>(h % count);
    for (unsigned k = 0; k < kFaultKinds; ++k) {
        if ((cfg.kinds & (FaultMask{1} << k)) != 0 && want-- == 0) {
            return static_cast<FaultKind>(k);
        }
    }
    return std::nullopt;
}

std::optional<FaultKind> FaultInjector::pick(std::uint16_t tag) noexcept {
    std::optional<FaultKind> k = decide(cfg_, queue_, n_);
    ++n_;
    if (k) {
        ++counts_[static_cast<unsigned>(*k)];
        if (logged_ < kMaxLogged) {
            ++logged_;
            log_error("fault: %s: queue %u: %s on tag %u (completion %llu)%s", name_, queue_,
                      kNames[static_cast<unsigned>(*k)].data(), static_cast<unsigned>(tag),
                      static_cast<unsigned long long>(n_ - 1),
                      logged_ == kMaxLogged ? "; further faults are only counted" : "");
        }
    }
    return k;
}

bool FaultInjector::begin_batch(FaultSeam& seam) noexcept {
    if (!dup_) {
        return true;
    }
    const userblk_io_desc d = *dup_;
    dup_.reset();
    return seam.send(d, 0);
}

bool FaultInjector::complete(const userblk_io_desc& d, FaultSeam& seam) noexcept {
    std::optional<FaultKind> f = pick(d.tag);
    if (!f) {
        return seam.answer(d, false).has_value();
    }
    switch (*f) {
    case FaultKind::drop:
        return true; // the device dies at the request's timeout
    case FaultKind::exit:
        (void)seam.flush(); // what was answered so far goes to the kernel, the rest not
        exit_now();
    case FaultKind::stall:
        if (!seam.flush()) {
            return false;
        }
        stall();
        break;
    case FaultKind::wrong_tag: {
        // Every variant fails what it might hit (-EIO), so a lie that happened to match an
        // outstanding request could only fail it, never fake its success.
        const std::uint32_t depth = seam.depth();
        userblk_io_desc w = d;
        switch (below(depth > 1 ? 3 : 2)) { // a queue of depth 1 has no other tag
        case 0: // beyond the depth
            w.tag = static_cast<std::uint16_t>(depth + below(0x10000 - depth));
            break;
        case 1: // the same tag, a generation it does not have
            w.gen = d.gen + 1 + below(1000);
            break;
        default: // another tag (one of the depth - 1 others), this request's generation
            w.tag = static_cast<std::uint16_t>((d.tag + 1 + below(depth - 1)) % depth);
            break;
        }
        if (!seam.send(w, -EIO)) {
            return false;
        }
        break;
    }
    case FaultKind::bad_result:
        if (below(2) == 0) {
            if (!seam.send(d, invalid_result())) { // refused; the real answer follows
                return false;
            }
            break;
        }
        return seam.fail(d, odd_errno()); // a valid errno the request fails with
    case FaultKind::twice: {
        std::optional<std::int32_t> res = seam.answer(d, false);
        if (!res) {
            return false;
        }
        if (below(2) == 0) {
            return seam.send(d, *res); // right after the first, in the same batch
        }
        dup_ = d; // at the start of the next batch, when the tag may be in use again
        return true;
    }
    case FaultKind::scribble: {
        const bool ok = seam.answer(d, false).has_value();
        seam.scribble();
        return ok;
    }
    case FaultKind::short_len:
        return seam.answer(d, d.op == USERBLK_OP_READ).has_value();
    }
    return seam.answer(d, false).has_value();
}

std::uint64_t FaultInjector::next() noexcept {
    stream_ = fault_mix(stream_);
    return stream_;
}

std::int32_t FaultInjector::invalid_result() noexcept {
    static constexpr std::array<std::int32_t, 6> kBad = {1, 4096, INT_MAX, -4096, INT_MIN, -100000};
    return kBad[below(kBad.size())];
}

std::int32_t FaultInjector::odd_errno() noexcept {
    static constexpr std::array<std::int32_t, 4> kOdd = {-4095, -ENOSPC, -EOPNOTSUPP, -ENOMEM};
    return kOdd[below(kOdd.size())];
}

void FaultInjector::stall() const noexcept {
    std::this_thread::sleep_for(std::chrono::milliseconds(2ULL * timeout_ms_ + 1000));
}

void FaultInjector::exit_now() const noexcept {
    log_error("fault: %s: queue %u: exiting mid-batch with requests outstanding", name_, queue_);
    std::_Exit(kFaultExitStatus);
}

} // namespace userblk
