#include "client.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

namespace userblk::nbd {

namespace {

/// Option replies longer than this are not from a server we can talk to.
constexpr std::uint32_t kMaxOptionReply = 64 * 1024;

int send_bytes(int fd, std::span<const std::byte> bytes, int flags) noexcept {
    iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
    return send_all(fd, std::span(&iov, 1), flags);
}

timeval to_timeval(std::uint32_t ms) noexcept {
    return {static_cast<time_t>(ms / 1000), static_cast<suseconds_t>(ms % 1000) * 1000};
}

/// The handshake on a connected socket; errors are "<what>: ..." with what naming the server.
class Handshake {
public:
    Handshake(int fd, std::string_view export_name, std::string what)
        : fd_(fd), export_name_(export_name), what_(std::move(what)) {}

    Result<ExportInfo> run() {
        std::array<std::byte, 18> hello{};
        if (int r = recv_all(fd_, hello); r < 0) {
            return io_error(r, "receiving the greeting");
        }
        if (get_be<std::uint64_t>(hello.data()) != kInitMagic) {
            return protocol_error("it is not an NBD server (no NBDMAGIC greeting)");
        }
        auto second = get_be<std::uint64_t>(hello.data() + 8);
        if (second == kOldstyleMagic) {
            return protocol_error("it speaks the old-style handshake; only fixed newstyle is "
                                  "supported");
        }
        if (second != kOptMagic) {
            return protocol_error("it is not an NBD server (bad magic after NBDMAGIC)");
        }
        auto server_flags = get_be<std::uint16_t>(hello.data() + 16);
        if ((server_flags & kFlagFixedNewstyle) == 0) {
            return protocol_error("it does not offer fixed newstyle negotiation");
        }
        std::uint32_t client_flags = kClientFixedNewstyle;
        if ((server_flags & kFlagNoZeroes) != 0) {
            client_flags |= kClientNoZeroes;
        }
        // Client flags, then NBD_OPT_GO: name length, name, one info request (block sizes).
        const std::string& name = export_name_;
        std::vector<std::byte> out(4 + 16 + 4 + name.size() + 2 + 2);
        std::byte* p = out.data();
        put_be<std::uint32_t>(p, client_flags);
        put_be<std::uint64_t>(p + 4, kOptMagic);
        put_be<std::uint32_t>(p + 12, kOptGo);
        put_be<std::uint32_t>(p + 16, static_cast<std::uint32_t>(out.size() - 20));
        put_be<std::uint32_t>(p + 20, static_cast<std::uint32_t>(name.size()));
        std::memcpy(p + 24, name.data(), name.size());
        put_be<std::uint16_t>(p + 24 + name.size(), 1);
        put_be<std::uint16_t>(p + 26 + name.size(), kInfoBlockSize);
        if (int r = send_bytes(fd_, out, 0); r < 0) {
            return io_error(r, "sending NBD_OPT_GO");
        }
        return replies();
    }

private:
    /// The replies to NBD_OPT_GO: any number of NBD_REP_INFO, then an ACK or an error.
    Result<ExportInfo> replies() {
        ExportInfo info;
        bool have_export = false;
        while (true) {
            std::array<std::byte, 20> head{};
            if (int r = recv_all(fd_, head); r < 0) {
                return io_error(r, "receiving the reply to NBD_OPT_GO");
            }
            auto magic = get_be<std::uint64_t>(head.data());
            auto option = get_be<std::uint32_t>(head.data() + 8);
            auto type = get_be<std::uint32_t>(head.data() + 12);
            auto len = get_be<std::uint32_t>(head.data() + 16);
            if (magic != kOptReplyMagic || option != kOptGo || len > kMaxOptionReply) {
                return protocol_error("malformed reply to NBD_OPT_GO");
            }
            std::vector<std::byte> data(len);
            if (int r = recv_all(fd_, data); r < 0) {
                return io_error(r, "receiving the reply to NBD_OPT_GO");
            }
            if ((type & kRepFlagError) != 0) {
                return refused(type, data);
            }
            if (type == kRepAck) {
                if (!have_export) {
                    return protocol_error("it accepted the export without saying its size");
                }
                return info;
            }
            if (type != kRepInfo || len < 2) {
                return protocol_error("unexpected reply " + std::to_string(type) +
                                      " to NBD_OPT_GO");
            }
            auto info_type = get_be<std::uint16_t>(data.data());
            if (info_type == kInfoExport && len >= 12) {
                info.size = get_be<std::uint64_t>(data.data() + 2);
                auto flags = get_be<std::uint16_t>(data.data() + 10);
                info.flags = (flags & kFlagHasFlags) != 0 ? flags : 0;
                have_export = true;
            } else if (info_type == kInfoBlockSize && len >= 14) {
                info.min_block = get_be<std::uint32_t>(data.data() + 2);
                info.max_payload = get_be<std::uint32_t>(data.data() + 10);
            } // other information is of no use here
        }
    }

    Status refused(std::uint32_t type, const std::vector<std::byte>& data) const {
        int err = EPROTO;
        std::string why;
        switch (type) {
        case kRepErrUnknown:
            err = ENOENT;
            why = "no such export";
            break;
        case kRepErrPolicy:
            err = EACCES;
            why = "refused by the server's policy";
            break;
        case kRepErrUnsup:
            err = EOPNOTSUPP;
            why = "the server does not support NBD_OPT_GO";
            break;
        case kRepErrTlsReqd:
            err = EPROTONOSUPPORT;
            why = "the server requires TLS, which this client does not speak";
            break;
        case kRepErrShutdown:
            err = ESHUTDOWN;
            why = "the server is shutting down";
            break;
        case kRepErrBlockSizeReqd:
        case kRepErrInvalid:
        case kRepErrPlatform:
        case kRepErrTooBig:
        default:
            why = "NBD error reply " + std::to_string(type & ~kRepFlagError);
            break;
        }
        if (!data.empty()) {
            why += ": ";
            why.append(reinterpret_cast<const char*>(data.data()), data.size());
        }
        return Status::from_errno(err, what_ + " refused export '" + export_name_ + "'", why);
    }

    Status io_error(int r, std::string_view step) const {
        return Status::from_errno(-r, what_ + ": handshake failed", std::string(step));
    }

    Status protocol_error(std::string_view why) const {
        return Status::from_errno(EPROTO, what_ + ": handshake failed", why);
    }

    int fd_;
    std::string export_name_;
    std::string what_;
};

} // namespace

std::string describe_flags(std::uint16_t flags) {
    std::string out;
    for (auto [bit, name] : {std::pair{kFlagSendFlush, "flush"},
                             {kFlagSendFua, "fua"},
                             {kFlagSendTrim, "trim"},
                             {kFlagSendWriteZeroes, "write_zeroes"},
                             {kFlagCanMultiConn, "multi_conn"},
                             {kFlagReadOnly, "read_only"}}) {
        if ((flags & bit) != 0) {
            out += (out.empty() ? "" : ",") + std::string(name);
        }
    }
    return out;
}

std::string Endpoint::address() const {
    bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + port;
}

Result<Connection> connect(const Endpoint& ep, std::string_view who) {
    const std::string server = std::string(who) + ": NBD server " + ep.address();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* list = nullptr;
    if (int r = ::getaddrinfo(ep.host.c_str(), ep.port.c_str(), &hints, &list); r != 0) {
        return Status::from_errno(r == EAI_SYSTEM ? errno : EHOSTUNREACH,
                                  std::string(who) + ": cannot resolve NBD server host '" +
                                      ep.host + "'",
                                  ::gai_strerror(r));
    }
    const timeval timeout = to_timeval(ep.timeout_ms);
    unique_fd fd;
    int err = ECONNREFUSED;
    for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
        fd.reset(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
        if (!fd.valid()) {
            err = errno;
            continue;
        }
        // SO_SNDTIMEO also limits a blocking connect() (it then fails with EINPROGRESS).
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
        int r;
        do {
            r = ::connect(fd.get(), a->ai_addr, a->ai_addrlen);
        } while (r < 0 && errno == EINTR);
        if (r == 0) {
            break;
        }
        err = errno == EINPROGRESS ? ETIMEDOUT : errno;
        fd.reset();
    }
    ::freeaddrinfo(list);
    if (!fd.valid()) {
        return Status::from_errno(err, std::string(who) + ": cannot connect to NBD server " +
                                           ep.address());
    }
    int one = 1;
    if (::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
        return Status::from_errno(errno, server + ": cannot set TCP_NODELAY");
    }
    auto info = Handshake(fd.get(), ep.export_name, server).run();
    if (!info.ok()) {
        return info.status();
    }
    return Connection{std::move(fd), info.value()};
}

Result<ExportInfo> handshake(int fd, std::string_view export_name, std::string_view what) {
    return Handshake(fd, export_name, std::string(what)).run();
}

int send_all(int fd, std::span<iovec> iov, int flags) noexcept {
    std::size_t first = 0;
    while (first < iov.size()) {
        if (iov[first].iov_len == 0) {
            ++first;
            continue;
        }
        msghdr msg{};
        msg.msg_iov = &iov[first];
        msg.msg_iovlen = iov.size() - first;
        ssize_t n = ::sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        }
        auto done = static_cast<std::size_t>(n);
        while (done > 0 && first < iov.size()) {
            std::size_t step = std::min(done, iov[first].iov_len);
            iov[first].iov_base = static_cast<std::byte*>(iov[first].iov_base) + step;
            iov[first].iov_len -= step;
            done -= step;
            if (iov[first].iov_len == 0) {
                ++first;
            }
        }
    }
    return 0;
}

int recv_all(int fd, std::span<std::byte> buf) noexcept {
    std::size_t done = 0;
    while (done < buf.size()) {
        ssize_t n = ::recv(fd, buf.data() + done, buf.size() - done, MSG_WAITALL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        done += static_cast<std::size_t>(n);
    }
    return 0;
}

void disconnect(int fd) noexcept {
    RequestHeader h = encode_request(kCmdDisc, 0, 0, 0, 0);
    // MSG_DONTWAIT: a full send buffer means the server is not reading; just close then.
    (void)::send(fd, h.data(), h.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

} // namespace userblk::nbd
