// The NBD wire format, shared by our client (client.h: the forward backend, the kernel nbd
// setup) and our server (nbd/server.h): the magic numbers, options, replies, commands,
// flags and errors, and the big-endian codecs of the fixed-size headers. Simple replies only; no
// structured replies, TLS or extended headers are spoken on either side.
// Protocol: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md
#pragma once

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>

namespace userblk::nbd {

// --- handshake ----------------------------------------------------------------------------------

inline constexpr std::uint64_t kInitMagic = 0x4e42444d41474943;     ///< "NBDMAGIC"
inline constexpr std::uint64_t kOptMagic = 0x49484156454f5054;      ///< "IHAVEOPT"
inline constexpr std::uint64_t kOldstyleMagic = 0x0000420281861253; ///< old-style servers
inline constexpr std::uint64_t kOptReplyMagic = 0x0003e889045565a9;

inline constexpr std::uint16_t kFlagFixedNewstyle = 1U << 0; ///< server handshake flags
inline constexpr std::uint16_t kFlagNoZeroes = 1U << 1;
inline constexpr std::uint32_t kClientFixedNewstyle = 1U << 0; ///< client flags
inline constexpr std::uint32_t kClientNoZeroes = 1U << 1;

/// Options (NBD_OPT_*).
inline constexpr std::uint32_t kOptExportName = 1;
inline constexpr std::uint32_t kOptAbort = 2;
inline constexpr std::uint32_t kOptList = 3;
inline constexpr std::uint32_t kOptStartTls = 5;
inline constexpr std::uint32_t kOptInfo = 6;
inline constexpr std::uint32_t kOptGo = 7;
inline constexpr std::uint32_t kOptStructuredReply = 8;

/// Option replies (NBD_REP_*); errors have bit 31 set.
inline constexpr std::uint32_t kRepAck = 1;
inline constexpr std::uint32_t kRepServer = 2;
inline constexpr std::uint32_t kRepInfo = 3;
inline constexpr std::uint32_t kRepFlagError = 1U << 31;
inline constexpr std::uint32_t kRepErrUnsup = kRepFlagError | 1;
inline constexpr std::uint32_t kRepErrPolicy = kRepFlagError | 2;
inline constexpr std::uint32_t kRepErrInvalid = kRepFlagError | 3;
inline constexpr std::uint32_t kRepErrPlatform = kRepFlagError | 4;
inline constexpr std::uint32_t kRepErrTlsReqd = kRepFlagError | 5;
inline constexpr std::uint32_t kRepErrUnknown = kRepFlagError | 6;
inline constexpr std::uint32_t kRepErrShutdown = kRepFlagError | 7;
inline constexpr std::uint32_t kRepErrBlockSizeReqd = kRepFlagError | 8;
inline constexpr std::uint32_t kRepErrTooBig = kRepFlagError | 9;

/// Information items of NBD_OPT_INFO / NBD_OPT_GO (NBD_INFO_*).
inline constexpr std::uint16_t kInfoExport = 0;
inline constexpr std::uint16_t kInfoName = 1;
inline constexpr std::uint16_t kInfoDescription = 2;
inline constexpr std::uint16_t kInfoBlockSize = 3;

/// The 124 zero bytes after NBD_OPT_EXPORT_NAME's answer, unless NO_ZEROES was agreed.
inline constexpr std::size_t kExportNamePadding = 124;

// --- transmission -------------------------------------------------------------------------------

inline constexpr std::uint32_t kRequestMagic = 0x25609513;
inline constexpr std::uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr std::uint32_t kStructuredReplyMagic = 0x668e33ef;

/// Commands (NBD_CMD_*).
inline constexpr std::uint16_t kCmdRead = 0;
inline constexpr std::uint16_t kCmdWrite = 1;
inline constexpr std::uint16_t kCmdDisc = 2;
inline constexpr std::uint16_t kCmdFlush = 3;
inline constexpr std::uint16_t kCmdTrim = 4;
inline constexpr std::uint16_t kCmdCache = 5;
inline constexpr std::uint16_t kCmdWriteZeroes = 6;
inline constexpr std::uint16_t kCmdBlockStatus = 7;

/// Command flags (NBD_CMD_FLAG_*).
inline constexpr std::uint16_t kCmdFlagFua = 1U << 0;
inline constexpr std::uint16_t kCmdFlagNoHole = 1U << 1;
inline constexpr std::uint16_t kCmdFlagDf = 1U << 2;
inline constexpr std::uint16_t kCmdFlagReqOne = 1U << 3;
inline constexpr std::uint16_t kCmdFlagFastZero = 1U << 4;

/// Transmission flags of an export (NBD_FLAG_*).
inline constexpr std::uint16_t kFlagHasFlags = 1U << 0;
inline constexpr std::uint16_t kFlagReadOnly = 1U << 1;
inline constexpr std::uint16_t kFlagSendFlush = 1U << 2;
inline constexpr std::uint16_t kFlagSendFua = 1U << 3;
inline constexpr std::uint16_t kFlagRotational = 1U << 4;
inline constexpr std::uint16_t kFlagSendTrim = 1U << 5;
inline constexpr std::uint16_t kFlagSendWriteZeroes = 1U << 6;
inline constexpr std::uint16_t kFlagSendDf = 1U << 7;
inline constexpr std::uint16_t kFlagCanMultiConn = 1U << 8;
inline constexpr std::uint16_t kFlagSendResize = 1U << 9;
inline constexpr std::uint16_t kFlagSendCache = 1U << 10;
inline constexpr std::uint16_t kFlagSendFastZero = 1U << 11;

/// Error values of a reply (NBD_E*): Linux's numbers, whatever the platform's are.
inline constexpr std::uint32_t kEperm = 1;
inline constexpr std::uint32_t kEio = 5;
inline constexpr std::uint32_t kEnomem = 12;
inline constexpr std::uint32_t kEinval = 22;
inline constexpr std::uint32_t kEnospc = 28;
inline constexpr std::uint32_t kEoverflow = 75;
inline constexpr std::uint32_t kEnotsup = 95;
inline constexpr std::uint32_t kEshutdown = 108;

inline constexpr std::size_t kRequestSize = 28;
inline constexpr std::size_t kReplySize = 16;
/// The largest payload a client may send when the server states no maximum.
inline constexpr std::uint32_t kDefaultMaxPayload = 32U << 20;

// --- codecs -------------------------------------------------------------------------------------

/// Stores v at p, most significant byte first.
template <class T>
constexpr void put_be(std::byte* p, T v) noexcept {
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        p[i] = static_cast<std::byte>(v >> (8 * (sizeof(T) - 1 - i)));
    }
}

/// The big-endian T at p.
template <class T>
constexpr T get_be(const std::byte* p) noexcept {
    T v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        v = static_cast<T>((v << 8) | static_cast<T>(p[i]));
    }
    return v;
}

using RequestHeader = std::array<std::byte, kRequestSize>;
using ReplyHeader = std::array<std::byte, kReplySize>;

/// A request header as received.
struct Request {
    std::uint32_t magic = 0;
    std::uint16_t flags = 0; ///< NBD_CMD_FLAG_*
    std::uint16_t type = 0;  ///< NBD_CMD_*
    std::uint64_t cookie = 0;
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
};

/// The 28-byte request header, big-endian on the wire.
constexpr RequestHeader encode_request(std::uint16_t type, std::uint16_t flags,
                                       std::uint64_t cookie, std::uint64_t offset,
                                       std::uint32_t length) noexcept {
    RequestHeader h{};
    put_be<std::uint32_t>(h.data(), kRequestMagic);
    put_be<std::uint16_t>(h.data() + 4, flags);
    put_be<std::uint16_t>(h.data() + 6, type);
    put_be<std::uint64_t>(h.data() + 8, cookie);
    put_be<std::uint64_t>(h.data() + 16, offset);
    put_be<std::uint32_t>(h.data() + 24, length);
    return h;
}

constexpr Request decode_request(const std::byte* p) noexcept {
    return {get_be<std::uint32_t>(p),      get_be<std::uint16_t>(p + 4),
            get_be<std::uint16_t>(p + 6),  get_be<std::uint64_t>(p + 8),
            get_be<std::uint64_t>(p + 16), get_be<std::uint32_t>(p + 24)};
}

/// A simple reply header as received.
struct SimpleReply {
    std::uint32_t magic = 0;
    std::uint32_t error = 0; ///< an NBD error value, 0 on success
    std::uint64_t cookie = 0;
};

/// The 16-byte simple reply header.
constexpr void encode_reply(std::byte* p, std::uint32_t error, std::uint64_t cookie) noexcept {
    put_be<std::uint32_t>(p, kSimpleReplyMagic);
    put_be<std::uint32_t>(p + 4, error);
    put_be<std::uint64_t>(p + 8, cookie);
}

constexpr SimpleReply decode_reply(std::span<const std::byte, kReplySize> bytes) noexcept {
    return {get_be<std::uint32_t>(bytes.data()), get_be<std::uint32_t>(bytes.data() + 4),
            get_be<std::uint64_t>(bytes.data() + 8)};
}

/// The negative errno of an NBD error value. The protocol's values are Linux's numbers for
/// EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP (EOPNOTSUPP) and ESHUTDOWN; any other
/// value is EIO.
constexpr int error_to_errno(std::uint32_t nbd_error) noexcept {
    switch (nbd_error) {
    case kEperm:
        return -EPERM;
    case kEio:
        return -EIO;
    case kEnomem:
        return -ENOMEM;
    case kEinval:
        return -EINVAL;
    case kEnospc:
        return -ENOSPC;
    case kEoverflow:
        return -EOVERFLOW;
    case kEnotsup:
        return -EOPNOTSUPP;
    case kEshutdown:
        return -ESHUTDOWN;
    default:
        return -EIO;
    }
}

/// The NBD error value of a negative errno, as a server answers: EROFS is EPERM; EDQUOT and
/// EFBIG are ENOSPC (as the protocol asks); ENOTSUP/EOPNOTSUPP is ENOTSUP; an errno the protocol
/// does not name is EIO.
constexpr std::uint32_t errno_to_error(int neg_errno) noexcept {
    switch (-neg_errno) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
        return kEperm;
    case ENOMEM:
        return kEnomem;
    case EINVAL:
        return kEinval;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return kEnospc;
    case EOVERFLOW:
        return kEoverflow;
    case EOPNOTSUPP:
        return kEnotsup;
    case ESHUTDOWN:
        return kEshutdown;
    default:
        return kEio;
    }
}

} // namespace userblk::nbd
