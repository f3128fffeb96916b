// Our NBD server: one connection's fixed-newstyle negotiation and transmission phase, on the
// project's Backend objects. The nbd transport runs one per kernel connection, on its own thread;
// the unit tests talk to it with libnbd.
//
// Negotiation (fixed newstyle only; a client without NBD_FLAG_C_FIXED_NEWSTYLE may only send
// NBD_OPT_EXPORT_NAME): NBD_OPT_GO and NBD_OPT_INFO (NBD_INFO_EXPORT always, NBD_INFO_BLOCK_SIZE
// and NBD_INFO_NAME when asked for), NBD_OPT_EXPORT_NAME, NBD_OPT_LIST (one export) and
// NBD_OPT_ABORT. Every other option, NBD_OPT_STRUCTURED_REPLY and NBD_OPT_STARTTLS included, is
// answered NBD_REP_ERR_UNSUP: replies are simple replies only. One export is served: the name
// ServerConfig::export_name, and "" (the default export) names it too; any other name is
// NBD_REP_ERR_UNKNOWN (NBD_OPT_EXPORT_NAME, which cannot fail politely, closes the connection).
//
// Transmission: NBD_CMD_READ, WRITE (with NBD_CMD_FLAG_FUA), FLUSH, TRIM, WRITE_ZEROES and DISC,
// each run through execute() (core/io.h) against the connection's own BackendQueue, whose buffer
// (max_payload bytes, reserved up front and backed on first use) holds a READ's data and any
// WRITE payload that does not arrive whole in the receive buffer. Errors as the protocol asks:
// a range past the end is EINVAL (ENOSPC for WRITE and WRITE_ZEROES), an unknown command or a
// flag that is not valid for the command or was not offered is EINVAL, a command the export did
// not offer (FLUSH without NBD_FLAG_SEND_FLUSH, ...) is EINVAL, a READ or WRITE longer than
// max_payload is EINVAL (a WRITE's payload is read and dropped first, so the stream stays in
// step), a write to a read-only export is EPERM; the connection goes on after each of them. A
// TRIM the backend cannot do succeeds (the protocol makes TRIM a hint). A request with a bad
// magic number cannot be answered (the stream is lost): the connection is closed. ENOTSUP and
// EOVERFLOW are never sent (the protocol reserves them for extensions not offered here).
//
// Cost per request: no allocation. Requests are received into a receive buffer with one recv()
// that takes whatever the client has sent (several requests when it has several in flight), and
// a WRITE whose payload arrived with it is written from there with no copy. Replies without
// data (WRITE, FLUSH, TRIM, WRITE_ZEROES, errors) wait in a small send buffer while more
// received requests are being served, and leave together: with the next READ's reply (one
// sendmsg() for the waiting replies, the header and the data) or before the server would block
// in recv(). At one request in flight that is one recv() and one send per request. Requests on
// one connection are served in order, one at a time: the client's depth is carried across as
// pipelining, not as parallel backend calls; several connections give parallelism.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stop_token>
#include <string>

#include "protocol.h"
#include "core/backend.h"
#include "core/mapping.h"
#include "core/stats.h"
#include "core/status.h"
#include "core/unique_fd.h"

namespace userblk::nbd {

/// What the server exports (one export).
struct ServerConfig {
    std::string export_name;     ///< its name; "" (the default export) always names it too
    std::uint64_t size = 0;      ///< bytes; the backend's size or less
    std::uint16_t flags = 0;     ///< transmission flags offered; kFlagHasFlags is added
    std::uint32_t min_block = 1; ///< NBD_INFO_BLOCK_SIZE: any alignment is served
    std::uint32_t preferred_block = 4096;
    std::uint32_t max_payload = kDefaultMaxPayload; ///< largest READ/WRITE; the buffer's size
};

/// The transmission flags offered for a device with USERBLK_F_* features: flush gives
/// NBD_FLAG_SEND_FLUSH and NBD_FLAG_SEND_FUA, discard NBD_FLAG_SEND_TRIM, write-zeroes
/// NBD_FLAG_SEND_WRITE_ZEROES, read-only NBD_FLAG_READ_ONLY; multi_conn adds
/// NBD_FLAG_CAN_MULTI_CONN. kFlagHasFlags is always set.
std::uint16_t transmission_flags(std::uint64_t features, bool multi_conn) noexcept;

/// Whether backend may be served over several connections at once (NBD_FLAG_CAN_MULTI_CONN): it
/// says multi_conn=1 in its capabilities, meaning a write completed on one queue is seen by every
/// queue and a flush on one queue makes every queue's completed writes durable (no per-queue
/// cache). null, ram and file say so.
bool backend_multi_conn(const Backend& backend);

/// How negotiate() ended.
enum class Negotiated : std::uint8_t {
    transmission, ///< NBD_OPT_GO or NBD_OPT_EXPORT_NAME: serve() next
    ended,        ///< the client sent NBD_OPT_ABORT or closed the connection: nothing to serve
};

/// The server's side of one connection. Its functions run on one thread; shutdown() on any.
class ServerConnection {
public:
    /// Takes fd (a connected stream socket) for connection id of backend, counting in stats:
    /// opens its BackendQueue (buffer of cfg.max_payload bytes) and its receive and send
    /// buffers. cfg.size must not exceed backend.size().
    static Result<std::unique_ptr<ServerConnection>>
    open(unique_fd fd, const ServerConfig& cfg, Backend& backend, unsigned id, QueueStats& stats);

    ServerConnection(const ServerConnection&) = delete;
    ServerConnection& operator=(const ServerConnection&) = delete;
    ~ServerConnection();

    /// The handshake: the greeting, then options until one enters the transmission phase or the
    /// client leaves. A violation (bad magic, unknown client flags, an option before fixed
    /// newstyle, a huge option, an unknown export with NBD_OPT_EXPORT_NAME) fails with EPROTO
    /// and a message naming it, and the connection should be closed.
    Result<Negotiated> negotiate();

    /// Serves requests until NBD_CMD_DISC, the end of the stream, or stop (which shuts the socket
    /// down): success. Fails on a request with a bad magic number (EPROTO, counted in
    /// protocol_errors) or a socket error; the connection is closed then.
    Status serve(std::stop_token stop);

    /// Shuts the socket down in both directions: a negotiate() or serve() blocked in it returns.
    void shutdown() noexcept;

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    [[nodiscard]] unsigned id() const noexcept { return id_; }

private:
    ServerConnection(unique_fd fd, const ServerConfig& cfg, Backend& backend, unsigned id,
                     BackendQueue q, Mapping inbox);

    // negotiation
    Status send_option_reply(std::uint32_t option, std::uint32_t type,
                             std::span<const std::byte> data);
    Status send_info(std::uint32_t option, std::span<const std::byte> request, bool* matched);

    // transmission
    int fill(std::size_t need) noexcept;
    int flush_replies() noexcept;
    int queue_reply(std::uint32_t error, std::uint64_t cookie) noexcept;
    int send_read_reply(std::uint64_t cookie, std::span<const std::byte> data) noexcept;
    int serve_one(const Request& req, bool* disconnect) noexcept;
    int receive_payload(std::uint32_t len, std::span<const std::byte>* payload) noexcept;
    int drop_payload(std::uint32_t len) noexcept;
    [[nodiscard]] std::uint32_t check_flags(const Request& req) const noexcept;
    void count_batch() noexcept;
    [[nodiscard]] std::string what() const;

    unique_fd fd_;
    ServerConfig cfg_;
    Backend& backend_;
    unsigned id_;
    BackendQueue q_;
    Mapping inbox_; ///< received bytes not yet consumed: [head_, tail_)
    std::size_t head_ = 0;
    std::size_t tail_ = 0;
    std::array<std::byte, 64 * kReplySize> outbox_{}; ///< replies waiting to be sent
    std::size_t outbox_len_ = 0;
    std::uint64_t batch_ = 0; ///< requests served since the last wait for more
    bool no_zeroes_ = false;
};

} // namespace userblk::nbd
