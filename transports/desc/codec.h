// The copy transport's wire format, as pure functions over buffers: parsing a read() batch of
// requests and encoding a write() batch of completions (uapi/userblk.h, USERBLK_MODE_COPY).
// No syscalls and no allocation here, so they are unit-tested and benchmarked without a kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include <sys/types.h>

#include <uapi/userblk.h>

namespace userblk::copy {

/// An entry is its header followed by exactly its data, without padding (as userblk.ko reads and
/// writes them). Lengths are multiples of the logical block size, so entries stay multiples of
/// 8 bytes, as the uapi says. The size of a completion entry carrying data_len bytes of data:
constexpr std::size_t completion_entry_size(std::uint32_t data_len) noexcept {
    return sizeof(userblk_io_cpl) + data_len;
}

/// The per-queue buffer for requests (and for completions): room for one WRITE of max_io_bytes
/// (USERBLK_COPY_MIN_READ) plus one descriptor per tag, so a full queue of requests without data
/// comes in one read(); rounded up to pages.
std::size_t queue_buffer_size(std::uint32_t max_io_bytes, std::uint32_t queue_depth) noexcept;

/// One request of a batch. data points into the batch: a WRITE's payload, empty otherwise.
struct Request {
    userblk_io_desc desc{};
    std::span<std::byte> data;
};

/// What RequestParser::next() found.
enum class ParseStatus : std::uint8_t {
    request,   ///< a well-formed request: run it
    invalid,   ///< a malformed request (READ/WRITE longer than max_io_bytes, WRITE data past the
               ///< end of the batch): desc is valid, answer it with an error. If its size is
               ///< unknown the rest of the batch is dropped and next() returns end.
    truncated, ///< bytes left that are fewer than a descriptor: dropped; next() returns end
    end,       ///< nothing more in the batch
};

/// Walks the entries of one read() batch in place.
class RequestParser {
public:
    /// inline_data: a WRITE's data follows its descriptor (copy); false for the transports whose
    /// read() returns descriptors only (pipe, splice).
    RequestParser(std::span<std::byte> batch, std::uint32_t max_io_bytes,
                  bool inline_data = true) noexcept
        : batch_(batch), max_io_(max_io_bytes), inline_data_(inline_data) {}

    /// The next entry into out (see ParseStatus).
    ParseStatus next(Request& out) noexcept;
    /// Bytes consumed so far (whole entries, or the whole batch once it was dropped).
    [[nodiscard]] std::size_t consumed() const noexcept { return pos_; }

private:
    std::span<std::byte> batch_;
    std::uint32_t max_io_;
    bool inline_data_;
    std::size_t pos_ = 0;
};

/// Builds one write() batch of completions in a caller-provided buffer; remembers each entry's
/// size (in entry_sizes, whose size bounds the entries per batch) to skip refused entries.
class CompletionBatch {
public:
    CompletionBatch(std::span<std::byte> buffer, std::span<std::uint32_t> entry_sizes) noexcept
        : buf_(buffer), sizes_(entry_sizes) {}

    /// Whether a completion with data_len bytes of data fits.
    [[nodiscard]] bool fits(std::uint32_t data_len) const noexcept {
        return !pending_ && entries_ < sizes_.size() &&
               used_ + completion_entry_size(data_len) <= buf_.size();
    }
    /// Appends a completion without data (result 0 or -errno). False if it does not fit.
    bool add(const userblk_io_desc& desc, std::int32_t result) noexcept;
    /// Reserves a READ completion with data_len bytes and returns its data area, to be filled and
    /// then closed with commit_data(); nullopt if it does not fit.
    std::optional<std::span<std::byte>> reserve_data(const userblk_io_desc& desc,
                                                     std::uint32_t data_len) noexcept;
    /// Closes the reserved entry: it keeps its data if result is 0, and is sent without data
    /// (just the error) otherwise.
    void commit_data(std::int32_t result) noexcept;

    /// The encoded entries.
    [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return buf_.first(used_); }
    [[nodiscard]] std::size_t entries() const noexcept { return entries_; }
    [[nodiscard]] std::uint32_t entry_size(std::size_t i) const noexcept { return sizes_[i]; }
    /// The completion header of entry i.
    [[nodiscard]] userblk_io_cpl entry(std::size_t i) const noexcept;
    void clear() noexcept {
        used_ = 0;
        entries_ = 0;
        pending_ = false;
    }

private:
    void put_header(std::size_t at, const userblk_io_desc& desc, std::int32_t result) noexcept;

    std::span<std::byte> buf_;
    std::span<std::uint32_t> sizes_;
    std::size_t used_ = 0;
    std::size_t entries_ = 0;
    bool pending_ = false;
    std::uint32_t pending_len_ = 0;
};

/// Where completions are written: the queue fd, or a fake in tests.
class CompletionSink {
public:
    CompletionSink() = default;
    CompletionSink(const CompletionSink&) = delete;
    CompletionSink& operator=(const CompletionSink&) = delete;
    virtual ~CompletionSink() = default;
    /// write(2) on the queue fd: bytes of entries applied, or -errno.
    virtual ssize_t write(std::span<const std::byte> bytes) noexcept = 0;
};

/// What send_completions() achieved.
enum class SendStatus : std::uint8_t {
    sent,        ///< every entry was applied or refused individually
    device_gone, ///< ENODEV: the device is dead, its requests failed by the kernel
    failed,      ///< the kernel broke the contract (a return inside an entry); error says how
};

struct SendResult {
    SendStatus status = SendStatus::sent;
    std::uint32_t write_calls = 0; ///< write() syscalls made
    std::uint32_t rejected = 0;    ///< entries the kernel refused (skipped)
    int first_error = 0;           ///< errno of the first refused entry (or of failed)
    std::uint16_t first_tag = 0;   ///< tag of the first refused entry
};

/// Writes the batch with the uapi's partial-write rules: a short write means the entry after the
/// applied ones is invalid, and a failed write (EINVAL, ENOENT, EFAULT, ...) means the first entry
/// is; either way that entry is skipped (counted in rejected) and the rest is written again.
/// EINTR retries; ENODEV ends with device_gone.
SendResult send_completions(const CompletionBatch& batch, CompletionSink& sink) noexcept;

} // namespace userblk::copy
