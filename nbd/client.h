// A small NBD client: the fixed-newstyle handshake with NBD_OPT_GO, and blocking socket helpers.
// Simple replies only (no structured replies, no TLS, no extended headers). The wire format is in
// protocol.h, shared with our NBD server (server.h).
// Protocol: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md
//
// Hand-written rather than libnbd on purpose: libnbd moves request data through user buffers,
// and the forward backend exists to splice data between a pipe and the socket, so that data it
// only forwards never enters the daemon's memory. Only the socket, the handshake and the 28- and
// 16-byte headers are needed for that, and they are here.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <sys/uio.h>

#include "core/status.h"
#include "core/unique_fd.h"
#include "protocol.h"

namespace userblk::nbd {

/// What NBD_OPT_GO said about the export.
struct ExportInfo {
    std::uint64_t size = 0;
    std::uint16_t flags = 0;     ///< transmission flags (0 without kFlagHasFlags)
    std::uint32_t min_block = 1; ///< NBD_INFO_BLOCK_SIZE, else the defaults
    std::uint32_t max_payload = kDefaultMaxPayload;
};

/// "flush,fua,trim,write_zeroes,multi_conn,read_only": the flags that matter here.
std::string describe_flags(std::uint16_t flags);

/// A server and export to connect to.
struct Endpoint {
    std::string host = "127.0.0.1";
    std::string port = "10809";
    std::string export_name;
    /// Limits connect() and, on the connection, every send and receive (SO_SNDTIMEO and
    /// SO_RCVTIMEO), so a server that stops answering cannot hold a thread forever.
    std::uint32_t timeout_ms = 30000;

    /// "127.0.0.1:10809", "[::1]:10809".
    [[nodiscard]] std::string address() const;
};

/// A connected socket in the transmission phase, and what the server said about the export.
struct Connection {
    unique_fd fd;
    ExportInfo info;
};

/// Connects over TCP (TCP_NODELAY, the timeouts) and negotiates the export with fixed newstyle and
/// NBD_OPT_GO (asking for NBD_INFO_BLOCK_SIZE). Errors start with who and name the server:
/// "forward: cannot connect to NBD server 127.0.0.1:10809: Connection refused".
Result<Connection> connect(const Endpoint& ep, std::string_view who);

/// Negotiates export_name on a socket fd that is already connected to an NBD server, as connect()
/// does after connecting (fixed newstyle, NBD_OPT_GO asking for NBD_INFO_BLOCK_SIZE), for a
/// socket made otherwise (a socket pair, a UNIX socket). Errors start with what, which names the
/// server: "<what>: handshake failed: ...", "<what> refused export 'x': ...".
Result<ExportInfo> handshake(int fd, std::string_view export_name, std::string_view what);

/// Sends every byte of iov (adjusted in place) with flags | MSG_NOSIGNAL. 0 or -errno; a timeout
/// is -ETIMEDOUT.
int send_all(int fd, std::span<iovec> iov, int flags) noexcept;
/// Receives exactly buf.size() bytes. 0 or -errno; a timeout is -ETIMEDOUT, the end of the stream
/// -ECONNRESET.
int recv_all(int fd, std::span<std::byte> buf) noexcept;

/// Ends the transmission phase politely (NBD_CMD_DISC; no reply). Best effort, never blocks.
void disconnect(int fd) noexcept;

} // namespace userblk::nbd
