#include "server.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/socket.h>
#include <sys/uio.h>

#include "client.h"
#include "core/capabilities.h"
#include "core/io.h"

namespace userblk::nbd {

namespace {

/// The receive buffer: several requests (a 4 KiB WRITE with its payload is 4124 bytes).
constexpr std::size_t kInboxSize = 256 * 1024;
/// WRITE payloads up to this size are gathered in the receive buffer and written from there;
/// larger ones are received into the connection's buffer.
constexpr std::uint32_t kInPlaceMax = 128 * 1024;
/// Option data beyond this is not a client worth talking to (names are at most 4096 bytes).
constexpr std::uint32_t kMaxOptionData = 64 * 1024;

/// The userblk op counted for an NBD command (0xff: other).
std::uint8_t op_of(std::uint16_t type) noexcept {
    switch (type) {
    case kCmdRead:
        return USERBLK_OP_READ;
    case kCmdWrite:
        return USERBLK_OP_WRITE;
    case kCmdFlush:
        return USERBLK_OP_FLUSH;
    case kCmdTrim:
        return USERBLK_OP_DISCARD;
    case kCmdWriteZeroes:
        return USERBLK_OP_WRITE_ZEROES;
    default:
        return 0xff;
    }
}

/// The error a server sends for a backend's result: ENOTSUP and EOVERFLOW are reserved by the
/// protocol for extensions this server does not offer, so they go out as EINVAL.
std::uint32_t reply_error(int result) noexcept {
    std::uint32_t e = errno_to_error(result);
    return e == kEnotsup || e == kEoverflow ? kEinval : e;
}

int send_bytes(int fd, std::span<const std::byte> bytes) noexcept {
    iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
    return send_all(fd, std::span(&iov, 1), 0);
}

/// The bytes of s: an error reply's message for the user.
std::span<const std::byte> text(std::string_view s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string hex(std::uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

} // namespace

std::uint16_t transmission_flags(std::uint64_t features, bool multi_conn) noexcept {
    std::uint16_t f = kFlagHasFlags;
    if ((features & USERBLK_F_FLUSH) != 0) {
        f |= kFlagSendFlush | kFlagSendFua;
    }
    if ((features & USERBLK_F_DISCARD) != 0) {
        f |= kFlagSendTrim;
    }
    if ((features & USERBLK_F_WRITE_ZEROES) != 0) {
        f |= kFlagSendWriteZeroes;
    }
    if ((features & USERBLK_F_READ_ONLY) != 0) {
        f |= kFlagReadOnly;
    }
    if (multi_conn) {
        f |= kFlagCanMultiConn;
    }
    return f;
}

bool backend_multi_conn(const Backend& backend) {
    Capabilities caps;
    backend.describe(caps);
    return caps.get("multi_conn") == "1";
}

// --- setup ---------------------------------------------------------------------------------------

Result<std::unique_ptr<ServerConnection>> ServerConnection::open(unique_fd fd,
                                                                 const ServerConfig& cfg,
                                                                 Backend& backend, unsigned id,
                                                                 QueueStats& stats) {
    const std::string who = "nbd: connection " + std::to_string(id);
    if (cfg.size > backend.size()) {
        return Status::from_errno(EINVAL,
                                  who + ": export of " + std::to_string(cfg.size) + " bytes",
                                  "the backend has " + std::to_string(backend.size()));
    }
    if (cfg.max_payload == 0) {
        return Status::from_errno(EINVAL, who + ": max_payload 0");
    }
    auto q = BackendQueue::open(backend, id, cfg.max_payload, stats);
    if (!q.ok()) {
        return q.status();
    }
    auto inbox = Mapping::anonymous(kInboxSize, true, who + ": receive buffer");
    if (!inbox.ok()) {
        return inbox.status();
    }
    return std::unique_ptr<ServerConnection>(new ServerConnection(
        std::move(fd), cfg, backend, id, std::move(q).value(), std::move(inbox).value()));
}

ServerConnection::ServerConnection(unique_fd fd, const ServerConfig& cfg, Backend& backend,
                                   unsigned id, BackendQueue q, Mapping inbox)
    : fd_(std::move(fd)), cfg_(cfg), backend_(backend), id_(id), q_(std::move(q)),
      inbox_(std::move(inbox)) {
    cfg_.flags |= kFlagHasFlags;
}

ServerConnection::~ServerConnection() = default;

void ServerConnection::shutdown() noexcept {
    ::shutdown(fd_.get(), SHUT_RDWR);
}

std::string ServerConnection::what() const {
    return "nbd: connection " + std::to_string(id_);
}

// --- negotiation ---------------------------------------------------------------------------------

Status ServerConnection::send_option_reply(std::uint32_t option, std::uint32_t type,
                                           std::span<const std::byte> data) {
    std::array<std::byte, 20> head{};
    put_be<std::uint64_t>(head.data(), kOptReplyMagic);
    put_be<std::uint32_t>(head.data() + 8, option);
    put_be<std::uint32_t>(head.data() + 12, type);
    put_be<std::uint32_t>(head.data() + 16, static_cast<std::uint32_t>(data.size()));
    std::array<iovec, 2> iov = {iovec{head.data(), head.size()},
                                iovec{const_cast<std::byte*>(data.data()), data.size()}};
    if (int r = send_all(fd_.get(), iov, 0); r < 0) {
        return Status::from_errno(-r, what() + ": sending an option reply");
    }
    return {};
}

Status ServerConnection::send_info(std::uint32_t option, std::span<const std::byte> request,
                                   bool* matched) {
    *matched = false;
    if (request.size() < 6) {
        return send_option_reply(option, kRepErrInvalid, text("option data too short"));
    }
    auto name_len = get_be<std::uint32_t>(request.data());
    if (name_len > request.size() - 6) {
        return send_option_reply(option, kRepErrInvalid, text("export name longer than the data"));
    }
    std::string_view name(reinterpret_cast<const char*>(request.data() + 4), name_len);
    auto count = get_be<std::uint16_t>(request.data() + 4 + name_len);
    if (request.size() != 4 + name_len + 2 + std::size_t{2} * count) {
        return send_option_reply(option, kRepErrInvalid,
                                 text("information requests do not fill the data"));
    }
    if (!name.empty() && name != cfg_.export_name) {
        std::string why =
            "no export '" + std::string(name) + "' (this server has '" + cfg_.export_name + "')";
        return send_option_reply(option, kRepErrUnknown, text(why));
    }
    std::array<std::byte, 12> exp{};
    put_be<std::uint16_t>(exp.data(), kInfoExport);
    put_be<std::uint64_t>(exp.data() + 2, cfg_.size);
    put_be<std::uint16_t>(exp.data() + 10, cfg_.flags);
    if (Status st = send_option_reply(option, kRepInfo, exp); !st.ok()) {
        return st;
    }
    bool sent_block = false;
    bool sent_name = false;
    for (std::uint16_t i = 0; i < count; ++i) {
        auto type = get_be<std::uint16_t>(request.data() + 4 + name_len + 2 + 2 * i);
        if (type == kInfoBlockSize && !sent_block) {
            std::array<std::byte, 14> bs{};
            put_be<std::uint16_t>(bs.data(), kInfoBlockSize);
            put_be<std::uint32_t>(bs.data() + 2, cfg_.min_block);
            put_be<std::uint32_t>(bs.data() + 6, cfg_.preferred_block);
            put_be<std::uint32_t>(bs.data() + 10, cfg_.max_payload);
            if (Status st = send_option_reply(option, kRepInfo, bs); !st.ok()) {
                return st;
            }
            sent_block = true;
        } else if (type == kInfoName && !sent_name) {
            std::vector<std::byte> nm(2 + cfg_.export_name.size());
            put_be<std::uint16_t>(nm.data(), kInfoName);
            std::memcpy(nm.data() + 2, cfg_.export_name.data(), cfg_.export_name.size());
            if (Status st = send_option_reply(option, kRepInfo, nm); !st.ok()) {
                return st;
            }
            sent_name = true;
        } // other items (the description) are optional: not sent
    }
    *matched = true;
    return send_option_reply(option, kRepAck, {});
}

Result<Negotiated> ServerConnection::negotiate() {
    auto violation = [&](const std::string& why) -> Result<Negotiated> {
        q_.stats().protocol_errors.add();
        return Status::from_errno(EPROTO, what() + ": negotiation failed", why);
    };
    auto io = [&](int r, std::string_view step) -> Result<Negotiated> {
        return Status::from_errno(-r, what() + ": negotiation failed", std::string(step));
    };
    std::array<std::byte, 18> hello{};
    put_be<std::uint64_t>(hello.data(), kInitMagic);
    put_be<std::uint64_t>(hello.data() + 8, kOptMagic);
    put_be<std::uint16_t>(hello.data() + 16, kFlagFixedNewstyle | kFlagNoZeroes);
    if (int r = send_bytes(fd_.get(), hello); r < 0) {
        return io(r, "sending the greeting");
    }
    std::array<std::byte, 4> client{};
    if (int r = recv_all(fd_.get(), client); r < 0) {
        return r == -ECONNRESET ? Result<Negotiated>(Negotiated::ended)
                                : io(r, "receiving the client flags");
    }
    auto client_flags = get_be<std::uint32_t>(client.data());
    if ((client_flags & ~(kClientFixedNewstyle | kClientNoZeroes)) != 0) {
        return violation("unknown client flags " + hex(client_flags));
    }
    const bool fixed = (client_flags & kClientFixedNewstyle) != 0;
    no_zeroes_ = (client_flags & kClientNoZeroes) != 0;
    while (true) {
        std::array<std::byte, 16> head{};
        if (int r = recv_all(fd_.get(), head); r < 0) {
            return r == -ECONNRESET ? Result<Negotiated>(Negotiated::ended)
                                    : io(r, "receiving an option");
        }
        if (get_be<std::uint64_t>(head.data()) != kOptMagic) {
            return violation("option with bad magic " + hex(get_be<std::uint64_t>(head.data())));
        }
        auto option = get_be<std::uint32_t>(head.data() + 8);
        auto len = get_be<std::uint32_t>(head.data() + 12);
        if (len > kMaxOptionData) {
            return violation("option " + std::to_string(option) + " with " + std::to_string(len) +
                             " bytes of data");
        }
        std::vector<std::byte> data(len);
        if (int r = recv_all(fd_.get(), data); r < 0) {
            return io(r, "receiving an option's data");
        }
        if (!fixed && option != kOptExportName) {
            return violation("option " + std::to_string(option) +
                             " from a client without fixed newstyle");
        }
        switch (option) {
        case kOptExportName: {
            std::string_view name(reinterpret_cast<const char*>(data.data()), data.size());
            if (!name.empty() && name != cfg_.export_name) {
                // It cannot be refused politely: the protocol says to close the connection.
                return Status::from_errno(ENOENT, what() + ": negotiation failed",
                                          "NBD_OPT_EXPORT_NAME for unknown export '" +
                                              std::string(name) + "'");
            }
            std::array<std::byte, 10 + kExportNamePadding> reply{};
            put_be<std::uint64_t>(reply.data(), cfg_.size);
            put_be<std::uint16_t>(reply.data() + 8, cfg_.flags);
            std::size_t n = no_zeroes_ ? 10 : reply.size();
            if (int r = send_bytes(fd_.get(), std::span(reply.data(), n)); r < 0) {
                return io(r, "answering NBD_OPT_EXPORT_NAME");
            }
            return Negotiated::transmission;
        }
        case kOptAbort:
            // The client closes next; a failed send only means it did so already.
            (void)send_option_reply(option, kRepAck, {});
            return Negotiated::ended;
        case kOptList: {
            if (len != 0) {
                if (Status st = send_option_reply(option, kRepErrInvalid,
                                                  text("NBD_OPT_LIST takes no data"));
                    !st.ok()) {
                    return st;
                }
                break;
            }
            std::vector<std::byte> server(4 + cfg_.export_name.size());
            put_be<std::uint32_t>(server.data(),
                                  static_cast<std::uint32_t>(cfg_.export_name.size()));
            std::memcpy(server.data() + 4, cfg_.export_name.data(), cfg_.export_name.size());
            if (Status st = send_option_reply(option, kRepServer, server); !st.ok()) {
                return st;
            }
            if (Status st = send_option_reply(option, kRepAck, {}); !st.ok()) {
                return st;
            }
            break;
        }
        case kOptInfo:
        case kOptGo: {
            bool matched = false;
            if (Status st = send_info(option, data, &matched); !st.ok()) {
                return st;
            }
            if (option == kOptGo && matched) {
                return Negotiated::transmission;
            }
            break;
        }
        default: {
            std::string why = option == kOptStructuredReply ? "structured replies are not offered"
                              : option == kOptStartTls
                                  ? "TLS is not offered"
                                  : "option " + std::to_string(option) + " is not supported";
            if (Status st = send_option_reply(option, kRepErrUnsup, text(why)); !st.ok()) {
                return st;
            }
            break;
        }
        }
    }
}

// --- transmission --------------------------------------------------------------------------------

void ServerConnection::count_batch() noexcept {
    if (batch_ > 0) {
        QueueStats::count_batch(q_.stats().request_batches, batch_);
        batch_ = 0;
    }
}

int ServerConnection::fill(std::size_t need) noexcept {
    std::byte* in = inbox_.data();
    while (tail_ - head_ < need) {
        if (head_ == tail_) {
            head_ = tail_ = 0;
        } else if (inbox_.size() - head_ < need) {
            std::memmove(in, in + head_, tail_ - head_);
            tail_ -= head_;
            head_ = 0;
        }
        // recv() may wait: the replies waiting to be sent leave first.
        if (int r = flush_replies(); r < 0) {
            return r;
        }
        count_batch();
        q_.stats().read_calls.add();
        ssize_t n = ::recv(fd_.get(), in + tail_, inbox_.size() - tail_, 0);
        if (n > 0) {
            tail_ += static_cast<std::size_t>(n);
            continue;
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

int ServerConnection::flush_replies() noexcept {
    if (outbox_len_ == 0) {
        return 0;
    }
    iovec iov{outbox_.data(), outbox_len_};
    QueueStats& s = q_.stats();
    s.write_calls.add();
    QueueStats::count_batch(s.completion_batches, outbox_len_ / kReplySize);
    outbox_len_ = 0;
    return send_all(fd_.get(), std::span(&iov, 1), 0);
}

int ServerConnection::queue_reply(std::uint32_t error, std::uint64_t cookie) noexcept {
    if (outbox_len_ == outbox_.size()) {
        if (int r = flush_replies(); r < 0) {
            return r;
        }
    }
    encode_reply(outbox_.data() + outbox_len_, error, cookie);
    outbox_len_ += kReplySize;
    return 0;
}

int ServerConnection::send_read_reply(std::uint64_t cookie,
                                      std::span<const std::byte> data) noexcept {
    ReplyHeader head{};
    encode_reply(head.data(), 0, cookie);
    std::array<iovec, 3> iov = {iovec{outbox_.data(), outbox_len_}, iovec{head.data(), head.size()},
                                iovec{const_cast<std::byte*>(data.data()), data.size()}};
    QueueStats& s = q_.stats();
    s.write_calls.add();
    QueueStats::count_batch(s.completion_batches, outbox_len_ / kReplySize + 1);
    outbox_len_ = 0;
    return send_all(fd_.get(), iov, 0);
}

int ServerConnection::receive_payload(std::uint32_t len,
                                      std::span<const std::byte>* payload) noexcept {
    if (len <= kInPlaceMax) {
        if (int r = fill(len); r < 0) {
            return r;
        }
        *payload = std::span<const std::byte>(inbox_.data() + head_, len);
        head_ += len; // stays valid until the next fill()
        return 0;
    }
    std::span<std::byte> buf = q_.buffer().first(len);
    std::size_t take = std::min<std::size_t>(tail_ - head_, len);
    std::memcpy(buf.data(), inbox_.data() + head_, take);
    head_ += take;
    if (take < len) {
        if (int r = flush_replies(); r < 0) {
            return r;
        }
        std::span<std::byte> rest = buf.subspan(take);
        std::size_t done = 0;
        while (done < rest.size()) {
            q_.stats().read_calls.add();
            ssize_t n = ::recv(fd_.get(), rest.data() + done, rest.size() - done, MSG_WAITALL);
            if (n > 0) {
                done += static_cast<std::size_t>(n);
            } else if (n == 0) {
                return -ECONNRESET;
            } else if (errno != EINTR) {
                return -errno;
            }
        }
    }
    *payload = buf;
    return 0;
}

int ServerConnection::drop_payload(std::uint32_t len) noexcept {
    std::size_t left = len;
    std::size_t take = std::min<std::size_t>(tail_ - head_, left);
    head_ += take;
    left -= take;
    std::span<std::byte> sink = q_.buffer();
    while (left > 0) {
        if (int r = flush_replies(); r < 0) {
            return r;
        }
        q_.stats().read_calls.add();
        ssize_t n = ::recv(fd_.get(), sink.data(), std::min(left, sink.size()), 0);
        if (n > 0) {
            left -= static_cast<std::size_t>(n);
        } else if (n == 0) {
            return -ECONNRESET;
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

std::uint32_t ServerConnection::check_flags(const Request& req) const noexcept {
    std::uint16_t allowed = 0;
    if ((cfg_.flags & kFlagSendFua) != 0) {
        allowed |= kCmdFlagFua; // valid on every command once offered
    }
    if (req.type == kCmdWriteZeroes) {
        allowed |= kCmdFlagNoHole;
    }
    return (req.flags & ~allowed) != 0 ? kEinval : 0;
}

int ServerConnection::serve_one(const Request& req, bool* disconnect) noexcept {
    QueueStats& s = q_.stats();
    const std::uint8_t op = op_of(req.type);
    // A request refused before it reaches the backend: counted as a request with an error, and
    // as a protocol error when the client broke a rule (malformed).
    auto refuse = [&](std::uint32_t error, bool malformed) {
        s.count_request(op, req.type == kCmdFlush ? 0 : req.length);
        s.io_errors.add();
        if (malformed) {
            s.protocol_errors.add();
        }
        return queue_reply(error, req.cookie);
    };
    const bool read_only = (cfg_.flags & kFlagReadOnly) != 0;
    const bool fua = (req.flags & kCmdFlagFua) != 0;
    userblk_io_desc desc{};
    desc.op = op;
    desc.offset = req.offset;
    desc.len = req.length;

    switch (req.type) {
    case kCmdDisc:
        *disconnect = true;
        return 0;

    case kCmdRead: {
        if (std::uint32_t e = check_flags(req); e != 0) {
            return refuse(e, true);
        }
        if (req.length > cfg_.max_payload) {
            return refuse(kEinval, true);
        }
        if (!range_ok(req.offset, req.length, cfg_.size)) {
            return refuse(kEinval, false);
        }
        std::span<std::byte> data = q_.buffer().first(req.length);
        int r = execute(backend_, q_, desc, data);
        if (r < 0) {
            return queue_reply(reply_error(r), req.cookie);
        }
        return send_read_reply(req.cookie, data);
    }

    case kCmdWrite: {
        if (req.length > cfg_.max_payload) {
            if (int r = drop_payload(req.length); r < 0) {
                return r;
            }
            return refuse(kEinval, true);
        }
        std::span<const std::byte> payload;
        if (int r = receive_payload(req.length, &payload); r < 0) {
            return r;
        }
        if (std::uint32_t e = check_flags(req); e != 0) {
            return refuse(e, true);
        }
        if (read_only) {
            return refuse(kEperm, false);
        }
        if (!range_ok(req.offset, req.length, cfg_.size)) {
            return refuse(kEnospc, false);
        }
        desc.flags = fua ? USERBLK_IO_F_FUA : 0;
        // execute() takes a mutable span for both directions; a WRITE only reads it.
        std::span<std::byte> data(const_cast<std::byte*>(payload.data()), payload.size());
        return queue_reply(reply_error(execute(backend_, q_, desc, data)), req.cookie);
    }

    case kCmdFlush: {
        if ((cfg_.flags & kFlagSendFlush) == 0) {
            return refuse(kEinval, true);
        }
        if (std::uint32_t e = check_flags(req); e != 0) {
            return refuse(e, true);
        }
        desc.offset = 0;
        desc.len = 0;
        return queue_reply(reply_error(execute(backend_, q_, desc, {})), req.cookie);
    }

    case kCmdTrim:
    case kCmdWriteZeroes: {
        const bool trim = req.type == kCmdTrim;
        if ((cfg_.flags & (trim ? kFlagSendTrim : kFlagSendWriteZeroes)) == 0) {
            return refuse(kEinval, true);
        }
        if (std::uint32_t e = check_flags(req); e != 0) {
            return refuse(e, true);
        }
        if (read_only) {
            return refuse(kEperm, false);
        }
        if (!range_ok(req.offset, req.length, cfg_.size)) {
            return refuse(trim ? kEinval : kEnospc, false);
        }
        if (!trim && (req.flags & kCmdFlagNoHole) != 0) {
            desc.flags |= USERBLK_IO_F_NOUNMAP;
        }
        int r = execute(backend_, q_, desc, {});
        if (trim && r == -EOPNOTSUPP) {
            r = 0; // a TRIM is a hint the server may ignore
        }
        if (r == 0 && fua) {
            r = backend_.flush(q_);
        }
        return queue_reply(reply_error(r), req.cookie);
    }

    default:
        return refuse(kEinval, true); // unknown, or not offered (CACHE, BLOCK_STATUS)
    }
}

Status ServerConnection::serve(std::stop_token stop) {
    std::stop_callback on_stop(stop, [this] { shutdown(); });
    auto ended = [&](int r, std::string_view step) -> Status {
        if (r == -ECONNRESET || stop.stop_requested()) {
            return {}; // the client closed, or we were told to stop
        }
        shutdown();
        return Status::from_errno(-r, what() + ": " + std::string(step));
    };
    while (true) {
        if (int r = fill(kRequestSize); r < 0) {
            return ended(r, "receiving a request");
        }
        Request req = decode_request(inbox_.data() + head_);
        if (req.magic != kRequestMagic) {
            q_.stats().protocol_errors.add();
            (void)flush_replies();
            shutdown();
            return Status::from_errno(EPROTO, what() + ": request with bad magic " + hex(req.magic),
                                      "the stream cannot be trusted: connection closed");
        }
        head_ += kRequestSize;
        bool disconnect = false;
        int r = serve_one(req, &disconnect);
        if (r < 0) {
            return ended(r, "serving a request");
        }
        if (disconnect) {
            count_batch();
            if (int f = flush_replies(); f < 0) {
                return ended(f, "sending replies");
            }
            shutdown();
            return {};
        }
        ++batch_;
    }
}

} // namespace userblk::nbd
