// The forward backend: a remote NBD server over TCP (nbdkit, qemu-nbd, nbd-server), the case
// where the daemon handles only metadata and forwards the data.
//
// Setup: the factory connects once to check the server and learn the export (fixed newstyle,
// NBD_OPT_GO; nbd/client.h), so `userblk add` fails before the device exists when the server is
// missing, refuses the export, or the export is smaller than the device. Each queue then opens
// its own connection in init_queue() (TCP_NODELAY, kept in the queue's state). With several
// queues and a server that has a write cache, the server must advertise multi-conn: a flush sent
// on one connection would otherwise not cover writes completed on the others.
//
// Memory: none per I/O. The memory path sends header and data with one sendmsg() and receives a
// READ's data straight into the caller's buffer. The pipe path (native_pipe()) builds only the
// request header in user memory: a WRITE sends the 28-byte header with MSG_MORE, then splices
// the data pipe -> socket; a READ receives exactly the 16-byte reply (never into the data), checks
// it, then splices socket -> pipe. No request data enters the daemon's memory on that path.
//
// Concurrency: one connection per queue, used by that queue's thread only, so no lock. Requests
// are synchronous: one request in flight per connection (a known limit: a queue's throughput is
// bound by one round trip per request; the block layer's depth is not carried to the server).
//
// Commands: FUA is sent as NBD_CMD_FLAG_FUA when the server takes it, else as a flush after the
// write when the server has a cache (NBD_FLAG_SEND_FLUSH), else it needs nothing. flush is
// NBD_CMD_FLUSH, or succeeds at once when the server has no cache to flush (no SEND_FLUSH, as
// the protocol says). discard is NBD_CMD_TRIM (EOPNOTSUPP without SEND_TRIM); write-zeroes is
// NBD_CMD_WRITE_ZEROES, else zero blocks written (Backend::write_zeroes). Server errors come back
// as their -errno and leave the connection usable.
//
// Failure: a connection that breaks (end of stream, reset, a timeout, a reply with a bad magic
// or another request's cookie) fails the request with EIO and is closed; every later request on
// that queue fails at once with EIO. There is no reconnection: a server that went away means a
// failed device, as with the kernel's nbd without its reconnect timer. Every send and receive is
// limited by timeout-ms (SO_SNDTIMEO/SO_RCVTIMEO, and poll() on the pipe path), so a server that
// stops answering fails the queue instead of holding it forever. A pipe that ends early on a
// WRITE is padded with zeros to keep the stream in step, and the request fails with EIO (its
// range is undefined, as after any failed write); a pipe that fails on a READ has the rest of the
// data drained from the socket. splice() cannot pass MSG_NOSIGNAL, so the process must ignore
// SIGPIPE (userblk does; the shared pipe adapter needs it too).
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backends.h"
#include "core/io.h"
#include "core/log.h"
#include "core/size.h"
#include "nbd/client.h"
#include "options.h"

namespace userblk {

namespace {

using Clock = std::chrono::steady_clock;

/// TRIM and WRITE_ZEROES lengths are 32-bit: larger ranges go in chunks of this many bytes (a
/// multiple of every block size).
constexpr std::uint64_t kZeroChunk = 1U << 30;

/// One queue's connection.
class ForwardQueue final : public BackendQueueState {
public:
    ForwardQueue(nbd::Connection conn, std::string address)
        : fd_(std::move(conn.fd)), flags_(conn.info.flags), address_(std::move(address)) {}
    ForwardQueue(const ForwardQueue&) = delete;
    ForwardQueue& operator=(const ForwardQueue&) = delete;
    ~ForwardQueue() override {
        if (fd_.valid()) {
            nbd::disconnect(fd_.get());
        }
    }

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    /// The export's transmission flags as this connection saw them.
    [[nodiscard]] std::uint16_t flags() const noexcept { return flags_; }
    [[nodiscard]] bool broken() const noexcept { return !fd_.valid(); }
    [[nodiscard]] std::uint64_t next_cookie() noexcept { return ++cookie_; }
    [[nodiscard]] std::uint64_t cookie() const noexcept { return cookie_; }

    /// Closes the connection after err (a negative errno) during step; says so once. -EIO.
    int fail(unsigned queue, const char* step, int err) noexcept {
        if (fd_.valid()) {
            log_error("forward: queue %u: connection to NBD server %s lost (%s: %s); every later "
                      "request on this queue fails with EIO",
                      queue, address_.c_str(), step, std::strerror(-err));
            fd_.reset();
        }
        return -EIO;
    }

private:
    unique_fd fd_;
    std::uint16_t flags_;
    std::uint64_t cookie_ = 0;
    std::string address_;
};

class ForwardBackend final : public Backend {
public:
    ForwardBackend(nbd::Endpoint ep, std::uint64_t size, nbd::ExportInfo info)
        : ep_(std::move(ep)), size_(size), info_(info) {}

    [[nodiscard]] std::uint64_t size() const noexcept override { return size_; }

    Status init_queue(BackendQueue& q) override {
        std::string who = "forward: queue " + std::to_string(q.id());
        auto conn = nbd::connect(ep_, who);
        if (!conn.ok()) {
            return conn.status();
        }
        if (conn->info.size < size_) {
            return Status::from_errno(
                ENOSPC, who + ": export '" + ep_.export_name + "' on " + ep_.address() + " shrank",
                std::to_string(conn->info.size) + " bytes now, the device needs " +
                    std::to_string(size_));
        }
        q.set_state(std::make_unique<ForwardQueue>(std::move(conn).value(), ep_.address()));
        return {};
    }

    int read(BackendQueue& q, std::uint64_t off, std::span<std::byte> dst) noexcept override {
        ForwardQueue* c = conn(q);
        if (c == nullptr) {
            return -EIO;
        }
        if (!range_ok(off, dst.size(), size_) || dst.size() > info_.max_payload) {
            return -EINVAL;
        }
        if (dst.empty()) {
            return 0;
        }
        if (int r = send_header(q, *c, nbd::kCmdRead, 0, off, dst.size(), 0); r < 0) {
            return r;
        }
        if (int r = recv_reply(q, *c); r < 0) {
            return r;
        }
        if (int r = nbd::recv_all(c->fd(), dst); r < 0) {
            return c->fail(q.id(), "receiving read data", r);
        }
        return 0;
    }

    int write(BackendQueue& q, std::uint64_t off, std::span<const std::byte> src,
              std::uint32_t flags) noexcept override {
        ForwardQueue* c = conn(q);
        if (c == nullptr) {
            return -EIO;
        }
        if (!range_ok(off, src.size(), size_) || src.size() > info_.max_payload) {
            return -EINVAL;
        }
        if (src.empty()) {
            return 0;
        }
        bool fua = (flags & USERBLK_IO_F_FUA) != 0;
        nbd::RequestHeader h =
            nbd::encode_request(nbd::kCmdWrite, command_flags(*c, fua), c->next_cookie(), off,
                                static_cast<std::uint32_t>(src.size()));
        std::array<iovec, 2> iov = {iovec{h.data(), h.size()},
                                    iovec{const_cast<std::byte*>(src.data()), src.size()}};
        if (int r = nbd::send_all(c->fd(), iov, 0); r < 0) {
            return c->fail(q.id(), "sending a write", r);
        }
        if (int r = recv_reply(q, *c); r < 0) {
            return r;
        }
        return fua ? flush_after_fua(q, *c) : 0;
    }

    int flush(BackendQueue& q) noexcept override {
        ForwardQueue* c = conn(q);
        if (c == nullptr) {
            return -EIO;
        }
        if ((c->flags() & nbd::kFlagSendFlush) == 0) {
            return 0; // no write cache on the server: nothing to flush
        }
        return simple_command(q, *c, nbd::kCmdFlush, 0, 0);
    }

    int discard(BackendQueue& q, std::uint64_t off, std::uint64_t len) noexcept override {
        ForwardQueue* c = conn(q);
        if (c == nullptr) {
            return -EIO;
        }
        if (!range_ok(off, len, size_)) {
            return -EINVAL;
        }
        if ((c->flags() & nbd::kFlagSendTrim) == 0) {
            return Backend::discard(q, off, len);
        }
        return chunked(q, *c, nbd::kCmdTrim, off, len);
    }

    int write_zeroes(BackendQueue& q, std::uint64_t off, std::uint64_t len,
                     std::uint32_t flags = 0) noexcept override {
        ForwardQueue* c = conn(q);
        if (c == nullptr) {
            return -EIO;
        }
        if (!range_ok(off, len, size_)) {
            return -EINVAL;
        }
        if ((c->flags() & nbd::kFlagSendWriteZeroes) == 0) {
            return Backend::write_zeroes(q, off, len, flags);
        }
        // NBD's NO_HOLE is the block layer's NOUNMAP.
        return chunked(q, *c, nbd::kCmdWriteZeroes, off, len,
                       (flags & USERBLK_IO_F_NOUNMAP) != 0 ? nbd::kCmdFlagNoHole : 0);
    }

    int read_to_pipe(BackendQueue& q, int pipe_fd, std::uint64_t off,
                     std::uint32_t len) noexcept override {
        ForwardQueue* c = conn(q);
        if (c == nullptr) {
            return -EIO;
        }
        if (!range_ok(off, len, size_) || len > info_.max_payload) {
            return -EINVAL;
        }
        if (len == 0) {
            return 0;
        }
        if (int r = send_header(q, *c, nbd::kCmdRead, 0, off, len, 0); r < 0) {
            return r;
        }
        if (int r = recv_reply(q, *c); r < 0) {
            return r;
        }
        Clock::time_point deadline{};
        std::uint32_t left = len;
        while (left > 0) {
            ssize_t n = ::splice(c->fd(), nullptr, pipe_fd, nullptr, left, 0);
            if (n > 0) {
                left -= static_cast<std::uint32_t>(n);
                deadline = {}; // progress: the timeout counts from the next wait
                continue;
            }
            if (n == 0) {
                return c->fail(q.id(), "receiving read data", -ECONNRESET);
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) { // the pipe is full, or the socket's timeout passed
                if (int w = wait_ready(q, deadline, pipe_fd, POLLOUT, c->fd(), POLLIN); w < 0) {
                    return c->fail(q.id(), "receiving read data", w);
                }
                continue;
            }
            // Which end failed is unknown: drain the data, so the stream stays in step if it was
            // the pipe (the socket then fails here too).
            int err = -errno;
            if (int r = drain(c->fd(), left); r < 0) {
                return c->fail(q.id(), "receiving read data", r);
            }
            return err;
        }
        return 0;
    }

    int write_from_pipe(BackendQueue& q, int pipe_fd, std::uint64_t off, std::uint32_t len,
                        std::uint32_t flags) noexcept override {
        ForwardQueue* c = conn(q);
        if (c == nullptr) {
            return -EIO;
        }
        if (!range_ok(off, len, size_) || len > info_.max_payload) {
            return -EINVAL;
        }
        if (len == 0) {
            return 0;
        }
        bool fua = (flags & USERBLK_IO_F_FUA) != 0;
        // MSG_MORE: the header leaves in the same segment as the data's start. The splice asks
        // for all the rest, so it needs no SPLICE_F_MORE: the kernel marks all but its last
        // page MSG_MORE itself, and a flag on the last call would hold the tail back.
        if (int r = send_header(q, *c, nbd::kCmdWrite, command_flags(*c, fua), off, len, MSG_MORE);
            r < 0) {
            return r;
        }
        Clock::time_point deadline{};
        std::uint32_t left = len;
        int pipe_err = 0;
        while (left > 0) {
            ssize_t n = ::splice(pipe_fd, nullptr, c->fd(), nullptr, left, 0);
            if (n > 0) {
                left -= static_cast<std::uint32_t>(n);
                deadline = {}; // progress: the timeout counts from the next wait
                continue;
            }
            if (n == 0) {
                pipe_err = -EIO; // the pipe ended before the request's data did
                break;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) { // the pipe is empty, or the socket's timeout passed
                if (int w = wait_ready(q, deadline, pipe_fd, POLLIN, c->fd(), POLLOUT); w < 0) {
                    return c->fail(q.id(), "sending write data", w);
                }
                continue;
            }
            pipe_err = -errno; // the pipe's, or the socket's: padding tells them apart
            break;
        }
        if (left > 0) {
            if (int r = pad(c->fd(), left); r < 0) {
                return c->fail(q.id(), "sending write data", r);
            }
        }
        int r = recv_reply(q, *c);
        if (pipe_err < 0) {
            return pipe_err;
        }
        if (r < 0) {
            return r;
        }
        return fua ? flush_after_fua(q, *c) : 0;
    }

    [[nodiscard]] bool native_pipe() const noexcept override { return true; }

    /// From the export's transmission flags in the handshake: a cache where the server takes
    /// NBD_CMD_FLUSH, discard where it takes NBD_CMD_TRIM, no writes on a read-only export.
    /// Write-zeroes is always served (zero blocks written where the server lacks the command).
    [[nodiscard]] BackendServes serves() const noexcept override {
        return {.write = (info_.flags & nbd::kFlagReadOnly) == 0,
                .cache = (info_.flags & nbd::kFlagSendFlush) != 0,
                .discard = (info_.flags & nbd::kFlagSendTrim) != 0,
                .write_zeroes = true};
    }

    void describe(Capabilities& caps) const override {
        describe_forward_backend(caps);
        caps.set("server", ep_.address());
        caps.set("export", ep_.export_name);
        caps.set_number("export_size", info_.size);
        caps.set("server_flags", nbd::describe_flags(info_.flags));
        // One connection per queue: the queues agree exactly when the server's connections do,
        // which only NBD_FLAG_CAN_MULTI_CONN promises.
        caps.set_flag("multi_conn", (info_.flags & nbd::kFlagCanMultiConn) != 0);
    }

private:
    /// The queue's connection, or nullptr when it broke (or init_queue() was never run).
    static ForwardQueue* conn(BackendQueue& q) noexcept {
        auto* c = static_cast<ForwardQueue*>(q.state());
        return c != nullptr && !c->broken() ? c : nullptr;
    }

    static std::uint16_t command_flags(const ForwardQueue& c, bool fua) noexcept {
        return fua && (c.flags() & nbd::kFlagSendFua) != 0 ? nbd::kCmdFlagFua : 0;
    }

    /// After a FUA write the server took without NBD_CMD_FLAG_FUA: a flush if it has a cache.
    static int flush_after_fua(BackendQueue& q, ForwardQueue& c) noexcept {
        if ((c.flags() & nbd::kFlagSendFua) != 0 || (c.flags() & nbd::kFlagSendFlush) == 0) {
            return 0;
        }
        return simple_command(q, c, nbd::kCmdFlush, 0, 0);
    }

    /// Sends a request header with a new cookie.
    static int send_header(BackendQueue& q, ForwardQueue& c, std::uint16_t type,
                           std::uint16_t flags, std::uint64_t off, std::uint64_t len,
                           int msg_flags) noexcept {
        nbd::RequestHeader h =
            nbd::encode_request(type, flags, c.next_cookie(), off, static_cast<std::uint32_t>(len));
        iovec iov{h.data(), h.size()};
        if (int r = nbd::send_all(c.fd(), std::span(&iov, 1), msg_flags); r < 0) {
            return c.fail(q.id(), "sending a request", r);
        }
        return 0;
    }

    /// Receives the simple reply to the last request: 0, the server's error as -errno (the
    /// connection stays usable), or -EIO after closing a broken connection.
    static int recv_reply(BackendQueue& q, ForwardQueue& c) noexcept {
        std::array<std::byte, nbd::kReplySize> raw{};
        if (int r = nbd::recv_all(c.fd(), raw); r < 0) {
            return c.fail(q.id(), "receiving a reply", r);
        }
        nbd::SimpleReply reply = nbd::decode_reply(raw);
        if (reply.magic != nbd::kSimpleReplyMagic) {
            return c.fail(q.id(), "receiving a reply", -EPROTO);
        }
        if (reply.cookie != c.cookie()) {
            return c.fail(q.id(), "receiving a reply (another request's cookie)", -EPROTO);
        }
        return reply.error == 0 ? 0 : nbd::error_to_errno(reply.error);
    }

    /// A request without data in either direction (FLUSH, TRIM, WRITE_ZEROES).
    static int simple_command(BackendQueue& q, ForwardQueue& c, std::uint16_t type,
                              std::uint64_t off, std::uint64_t len,
                              std::uint16_t cmd_flags = 0) noexcept {
        if (int r = send_header(q, c, type, cmd_flags, off, len, 0); r < 0) {
            return r;
        }
        return recv_reply(q, c);
    }

    static int chunked(BackendQueue& q, ForwardQueue& c, std::uint16_t type, std::uint64_t off,
                       std::uint64_t len, std::uint16_t cmd_flags = 0) noexcept {
        while (len > 0) {
            std::uint64_t chunk = std::min(len, kZeroChunk);
            if (int r = simple_command(q, c, type, off, chunk, cmd_flags); r < 0) {
                return r;
            }
            off += chunk;
            len -= chunk;
        }
        return 0;
    }

    /// After an EAGAIN on the pipe path: waits until the pipe or the socket is ready, counting
    /// each poll() in wait_calls. -ETIMEDOUT once the connection's timeout has passed without
    /// progress (deadline: set by the first wait, cleared by the caller when data moved).
    int wait_ready(BackendQueue& q, Clock::time_point& deadline, int pipe_fd, short pipe_events,
                   int sock_fd, short sock_events) const noexcept {
        Clock::time_point now = Clock::now();
        if (deadline == Clock::time_point{}) {
            deadline = now + std::chrono::milliseconds(ep_.timeout_ms);
        }
        while (now < deadline) {
            std::array<pollfd, 2> fds = {pollfd{pipe_fd, pipe_events, 0},
                                         pollfd{sock_fd, sock_events, 0}};
            auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
            q.stats().wait_calls.add();
            int r = ::poll(fds.data(), fds.size(), static_cast<int>(ms));
            if (r > 0) {
                return 0;
            }
            if (r < 0 && errno != EINTR) {
                return -errno;
            }
            now = Clock::now();
        }
        return -ETIMEDOUT;
    }

    /// Sends len zero bytes (the rest of a WRITE whose pipe failed).
    static int pad(int fd, std::uint32_t len) noexcept {
        static const std::array<std::byte, std::size_t{64} * 1024> kZeros{};
        while (len > 0) {
            std::uint32_t n = std::min<std::uint32_t>(len, kZeros.size());
            iovec iov{const_cast<std::byte*>(kZeros.data()), n};
            if (int r = nbd::send_all(fd, std::span(&iov, 1), 0); r < 0) {
                return r;
            }
            len -= n;
        }
        return 0;
    }

    /// Receives and drops len bytes (the rest of a READ whose pipe failed).
    static int drain(int fd, std::uint32_t len) noexcept {
        std::array<std::byte, 4096> sink{};
        while (len > 0) {
            std::uint32_t n = std::min<std::uint32_t>(len, sink.size());
            if (int r = nbd::recv_all(fd, std::span(sink.data(), n)); r < 0) {
                return r;
            }
            len -= n;
        }
        return 0;
    }

    nbd::Endpoint ep_;
    std::uint64_t size_;
    nbd::ExportInfo info_; ///< as the factory's connection saw it
};

} // namespace

void describe_forward_backend(Capabilities& caps) {
    caps.set_flag("native_pipe", true);
    caps.set("storage", "a remote NBD server over TCP (one connection per queue)");
    caps.set("requests_in_flight", "1 per queue (synchronous)");
    caps.set("flush", "NBD_CMD_FLUSH if the server has a cache (NBD_FLAG_SEND_FLUSH), else none");
    caps.set("fua", "NBD_CMD_FLAG_FUA, else a flush after the write");
    caps.set("discard", "NBD_CMD_TRIM if the server takes it, else EOPNOTSUPP");
    caps.set("write_zeroes", "NBD_CMD_WRITE_ZEROES if the server takes it, else zero writes");
    caps.set("pipe_path", "splice");
    caps.set("broken_connection", "EIO for the request and every later one on the queue; no "
                                  "reconnect");
    caps.set("locking", "none");
}

Result<std::unique_ptr<Backend>> make_forward_backend(const BackendConfig& cfg) {
    if (Status st = check_options("forward", cfg.options, kForwardOptions); !st.ok()) {
        return st;
    }
    nbd::Endpoint ep;
    ep.host = option_string(cfg.options, "host", ep.host);
    ep.export_name = option_string(cfg.options, "export", "");
    if (ep.host.empty()) {
        return Status::from_errno(EINVAL, "forward: invalid host=''", "expected a name or address");
    }
    auto port = option_number("forward", cfg.options, "port", 10809, 1, 65535);
    if (!port.ok()) {
        return port.status();
    }
    ep.port = std::to_string(port.value());
    auto timeout = option_number("forward", cfg.options, "timeout-ms", ep.timeout_ms, 1, 3600000);
    if (!timeout.ok()) {
        return timeout.status();
    }
    ep.timeout_ms = static_cast<std::uint32_t>(timeout.value());

    auto conn = nbd::connect(ep, "forward");
    if (!conn.ok()) {
        return conn.status();
    }
    nbd::ExportInfo info = conn->info;
    nbd::disconnect(conn->fd.get());
    const std::string what = "forward: export '" + ep.export_name + "' on " + ep.address();
    if (info.size < cfg.size) {
        return Status::from_errno(ENOSPC, what + " is too small",
                                  "it has " + std::to_string(info.size) + " bytes (" +
                                      format_size(info.size) + "), the device needs " +
                                      std::to_string(cfg.size) + " (" + format_size(cfg.size) +
                                      ")");
    }
    if (info.min_block > cfg.block_size) {
        return Status::from_errno(EINVAL, what + " needs larger blocks",
                                  "its minimum block is " + std::to_string(info.min_block) +
                                      " bytes, the device's block size is " +
                                      std::to_string(cfg.block_size));
    }
    if (cfg.max_io_bytes > info.max_payload) {
        return Status::from_errno(EINVAL, what + " takes smaller requests",
                                  "at most " + std::to_string(info.max_payload) +
                                      " bytes, the device's largest is " +
                                      std::to_string(cfg.max_io_bytes) + " (use --max-io)");
    }
    if (cfg.nr_queues > 1 && (info.flags & nbd::kFlagSendFlush) != 0 &&
        (info.flags & nbd::kFlagCanMultiConn) == 0) {
        return Status::from_errno(
            EINVAL, what + " cannot serve " + std::to_string(cfg.nr_queues) + " queues",
            "it has a write cache but does not advertise multi-conn, so a "
            "flush on one queue's connection would not cover the others; "
            "use one queue");
    }
    return std::unique_ptr<Backend>(
        std::make_unique<ForwardBackend>(std::move(ep), cfg.size, info));
}

} // namespace userblk
