#include "codec.h"

#include <cerrno>
#include <cstring>

#include <unistd.h>

namespace userblk::copy {

static_assert(sizeof(userblk_io_desc) % 8 == 0 && sizeof(userblk_io_cpl) % 8 == 0,
              "entry headers keep 8-byte alignment");

std::size_t queue_buffer_size(std::uint32_t max_io_bytes, std::uint32_t queue_depth) noexcept {
    static const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::size_t bytes = USERBLK_COPY_MIN_READ(std::size_t{max_io_bytes}) +
                        std::size_t{queue_depth} * sizeof(userblk_io_desc);
    return (bytes + page - 1) / page * page;
}

ParseStatus RequestParser::next(Request& out) noexcept {
    std::size_t left = batch_.size() - pos_;
    if (left == 0) {
        return ParseStatus::end;
    }
    if (left < sizeof(userblk_io_desc)) {
        pos_ = batch_.size();
        return ParseStatus::truncated;
    }
    std::memcpy(&out.desc, batch_.data() + pos_, sizeof(out.desc));
    out.data = {};
    left -= sizeof(userblk_io_desc);
    const std::uint8_t op = out.desc.op;
    const std::uint32_t len = out.desc.len;
    if (op != USERBLK_OP_WRITE || !inline_data_) {
        pos_ += sizeof(userblk_io_desc);
        if ((op == USERBLK_OP_READ || op == USERBLK_OP_WRITE) && len > max_io_) {
            return ParseStatus::invalid; // its extent is known: the batch goes on
        }
        return ParseStatus::request;
    }
    if (len > max_io_ || len > left) {
        pos_ = batch_.size(); // where the next entry starts is unknown
        return ParseStatus::invalid;
    }
    out.data = batch_.subspan(pos_ + sizeof(userblk_io_desc), len);
    pos_ += sizeof(userblk_io_desc) + len;
    return ParseStatus::request;
}

void CompletionBatch::put_header(std::size_t at, const userblk_io_desc& desc,
                                 std::int32_t result) noexcept {
    userblk_io_cpl cpl{};
    cpl.tag = desc.tag;
    cpl.gen = desc.gen;
    cpl.result = result;
    std::memcpy(buf_.data() + at, &cpl, sizeof(cpl));
}

bool CompletionBatch::add(const userblk_io_desc& desc, std::int32_t result) noexcept {
    if (!fits(0)) {
        return false;
    }
    put_header(used_, desc, result);
    sizes_[entries_++] = sizeof(userblk_io_cpl);
    used_ += sizeof(userblk_io_cpl);
    return true;
}

std::optional<std::span<std::byte>> CompletionBatch::reserve_data(const userblk_io_desc& desc,
                                                                  std::uint32_t data_len) noexcept {
    if (!fits(data_len)) {
        return std::nullopt;
    }
    put_header(used_, desc, 0);
    pending_ = true;
    pending_len_ = data_len;
    return buf_.subspan(used_ + sizeof(userblk_io_cpl), data_len);
}

void CompletionBatch::commit_data(std::int32_t result) noexcept {
    if (!pending_) {
        return;
    }
    pending_ = false;
    auto size = static_cast<std::uint32_t>(sizeof(userblk_io_cpl));
    if (result == 0) {
        size += pending_len_;
    } else {
        std::memcpy(buf_.data() + used_ + offsetof(userblk_io_cpl, result), &result,
                    sizeof(result));
    }
    sizes_[entries_++] = size;
    used_ += size;
}

userblk_io_cpl CompletionBatch::entry(std::size_t i) const noexcept {
    std::size_t at = 0;
    for (std::size_t k = 0; k < i; ++k) {
        at += sizes_[k];
    }
    userblk_io_cpl cpl{};
    std::memcpy(&cpl, buf_.data() + at, sizeof(cpl));
    return cpl;
}

SendResult send_completions(const CompletionBatch& batch, CompletionSink& sink) noexcept {
    SendResult res;
    std::span<const std::byte> bytes = batch.bytes();
    std::size_t done = 0;  // bytes applied or skipped
    std::size_t index = 0; // the entry starting at done
    auto reject = [&](int err) {
        if (res.rejected++ == 0) {
            res.first_error = err;
            userblk_io_cpl cpl{};
            std::memcpy(&cpl, bytes.data() + done, sizeof(cpl));
            res.first_tag = cpl.tag;
        }
        done += batch.entry_size(index++);
    };
    while (done < bytes.size()) {
        ssize_t n = sink.write(bytes.subspan(done));
        ++res.write_calls;
        if (n < 0) {
            int err = static_cast<int>(-n);
            if (err == EINTR) {
                continue;
            }
            if (err == ENODEV) {
                res.status = SendStatus::device_gone;
                return res;
            }
            reject(err); // the first entry was refused
            continue;
        }
        if (n == 0) {
            reject(EIO); // nothing applied and no error: count the first entry as refused
            continue;
        }
        std::size_t target = done + static_cast<std::size_t>(n);
        while (done < target && index < batch.entries()) {
            done += batch.entry_size(index++);
        }
        if (done != target) {
            res.status = SendStatus::failed;
            res.first_error = EPROTO;
            return res;
        }
        // A short write: the entry at done was refused; the next write() says why.
    }
    return res;
}

} // namespace userblk::copy
