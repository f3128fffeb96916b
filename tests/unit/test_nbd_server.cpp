// Protocol conformance of our NBD server (nbd/server.h), over a socket pair to a
// ServerConnection on the ram backend: libnbd as the client (an independent implementation:
// handshake, reads, writes, flush, FUA, trim, write-zeroes, pipelined requests, disconnect,
// errors with its strict checks turned off), and raw bytes for what libnbd will not send (bad
// magic, unknown commands and options, oversized requests, old-style clients).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <libnbd.h>
#include <sys/socket.h>

#include "nbd/client.h"
#include "nbd/server.h"
#include "test_util.h"

namespace {

using namespace userblk;
using namespace userblk::nbd;
using test::all_zero;
using test::pattern;

constexpr std::uint64_t kSize = 8ULL << 20;
constexpr std::uint64_t kAllFeatures = USERBLK_F_FLUSH | USERBLK_F_DISCARD | USERBLK_F_WRITE_ZEROES;

/// A ServerConfig for the tests: every feature, multi-conn as the backend says, a name.
ServerConfig config(std::uint64_t features = kAllFeatures, std::string name = "disk") {
    ServerConfig c;
    c.export_name = std::move(name);
    c.size = kSize;
    c.flags = transmission_flags(features, true);
    c.max_payload = 2U << 20;
    return c;
}

/// A server on one end of a socket pair, negotiating then serving on its own thread.
class Server {
public:
    explicit Server(const ServerConfig& cfg, std::string_view backend = "ram") {
        auto b = find_backend(backend)->make(BackendConfig{kSize, 512, 1, cfg.max_payload, {}});
        if (!b.ok()) {
            ADD_FAILURE() << b.status().message();
            return;
        }
        backend_ = std::move(b).value();
        multi_conn_ = backend_multi_conn(*backend_);
        int fds[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
            ADD_FAILURE() << "socketpair: " << std::strerror(errno);
            return;
        }
        client_.reset(fds[0]);
        auto c = ServerConnection::open(unique_fd(fds[1]), cfg, *backend_, 0, stats_);
        if (!c.ok()) {
            ADD_FAILURE() << c.status().message();
            return;
        }
        conn_ = std::move(c).value();
        thread_ = std::jthread([this](std::stop_token stop) {
            auto n = conn_->negotiate();
            negotiated_ok_ = n.ok();
            if (!n.ok()) {
                negotiate_error_ = n.status().message();
                conn_->shutdown();
                return;
            }
            ended_in_negotiation_ = n.value() == Negotiated::ended;
            if (n.value() == Negotiated::transmission) {
                Status st = conn_->serve(stop);
                served_ok_ = st.ok();
                serve_error_ = st.message();
            }
            conn_->shutdown();
        });
    }
    ~Server() { stop(); }

    /// The client's end (owned here until taken).
    int client() const { return client_.get(); }
    int take_client() { return client_.release(); }
    /// Waits for the server thread to end by itself.
    void join() {
        if (thread_.joinable()) {
            thread_.join();
        }
    }
    void stop() {
        if (thread_.joinable()) {
            thread_.request_stop();
            thread_.join();
        }
    }
    Backend& backend() { return *backend_; }
    [[nodiscard]] bool multi_conn() const { return multi_conn_; }
    // After join()/stop():
    StatsSnapshot stats() const { return stats_.snapshot(); }
    bool negotiated_ok_ = false;
    bool ended_in_negotiation_ = false;
    bool served_ok_ = false;
    std::string negotiate_error_;
    std::string serve_error_;

private:
    QueueStats stats_;
    std::unique_ptr<Backend> backend_;
    bool multi_conn_ = false;
    unique_fd client_;
    std::unique_ptr<ServerConnection> conn_;
    std::jthread thread_;
};

/// A libnbd handle, closed at the end.
struct Libnbd {
    nbd_handle* h = nbd_create();
    Libnbd() = default;
    Libnbd(const Libnbd&) = delete;
    Libnbd& operator=(const Libnbd&) = delete;
    ~Libnbd() { nbd_close(h); }
    operator nbd_handle*() const { return h; } // NOLINT(google-explicit-constructor)
};

std::string nbd_error() {
    const char* e = nbd_get_error();
    return e != nullptr ? e : "(no error)";
}

/// Connects h over s's socket, with export name.
void connect(Libnbd& h, Server& s, const char* name = "disk") {
    ASSERT_NE(h.h, nullptr);
    ASSERT_EQ(nbd_set_export_name(h, name), 0) << nbd_error();
    ASSERT_EQ(nbd_connect_socket(h, s.take_client()), 0) << nbd_error();
}

// --- raw bytes -----------------------------------------------------------------------------------

std::vector<std::byte> bytes(std::string_view s) {
    std::vector<std::byte> v(s.size());
    if (!s.empty()) // memcpy from an empty view's null data() is UB, even for 0 bytes
        std::memcpy(v.data(), s.data(), s.size());
    return v;
}

void send_raw(int fd, std::span<const std::byte> b) {
    iovec iov{const_cast<std::byte*>(b.data()), b.size()};
    ASSERT_EQ(send_all(fd, std::span(&iov, 1), 0), 0);
}

/// Reads the greeting and answers with client flags.
void raw_hello(int fd, std::uint32_t client_flags = kClientFixedNewstyle | kClientNoZeroes) {
    std::array<std::byte, 18> hello{};
    ASSERT_EQ(recv_all(fd, hello), 0);
    EXPECT_EQ(get_be<std::uint64_t>(hello.data()), kInitMagic);
    EXPECT_EQ(get_be<std::uint64_t>(hello.data() + 8), kOptMagic);
    EXPECT_EQ(get_be<std::uint16_t>(hello.data() + 16), kFlagFixedNewstyle | kFlagNoZeroes);
    std::array<std::byte, 4> flags{};
    put_be<std::uint32_t>(flags.data(), client_flags);
    send_raw(fd, flags);
}

void send_option(int fd, std::uint32_t option, std::span<const std::byte> data,
                 std::uint64_t magic = kOptMagic) {
    std::vector<std::byte> out(16 + data.size());
    put_be<std::uint64_t>(out.data(), magic);
    put_be<std::uint32_t>(out.data() + 8, option);
    put_be<std::uint32_t>(out.data() + 12, static_cast<std::uint32_t>(data.size()));
    std::copy(data.begin(), data.end(), out.begin() + 16);
    send_raw(fd, out);
}

struct OptionReply {
    std::uint32_t option = 0;
    std::uint32_t type = 0;
    std::vector<std::byte> data;
};

OptionReply read_option_reply(int fd) {
    std::array<std::byte, 20> head{};
    OptionReply r;
    if (recv_all(fd, head) != 0) {
        ADD_FAILURE() << "no option reply";
        return r;
    }
    EXPECT_EQ(get_be<std::uint64_t>(head.data()), kOptReplyMagic);
    r.option = get_be<std::uint32_t>(head.data() + 8);
    r.type = get_be<std::uint32_t>(head.data() + 12);
    r.data.resize(get_be<std::uint32_t>(head.data() + 16));
    EXPECT_EQ(recv_all(fd, r.data), 0);
    return r;
}

/// The data of NBD_OPT_GO / NBD_OPT_INFO for name, asking for the given information items.
std::vector<std::byte> go_data(std::string_view name, std::vector<std::uint16_t> items = {}) {
    std::vector<std::byte> d(4 + name.size() + 2 + 2 * items.size());
    put_be<std::uint32_t>(d.data(), static_cast<std::uint32_t>(name.size()));
    std::memcpy(d.data() + 4, name.data(), name.size());
    put_be<std::uint16_t>(d.data() + 4 + name.size(), static_cast<std::uint16_t>(items.size()));
    for (std::size_t i = 0; i < items.size(); ++i) {
        put_be<std::uint16_t>(d.data() + 6 + name.size() + 2 * i, items[i]);
    }
    return d;
}

/// True when the peer closed fd (recv gives end of file).
bool closed_by_peer(int fd) {
    std::array<std::byte, 64> buf{};
    ssize_t n;
    do {
        n = ::recv(fd, buf.data(), buf.size(), 0);
    } while (n > 0);
    return n == 0;
}

/// Sends a request header (and payload) and reads the simple reply (and n bytes of data).
SimpleReply raw_request(int fd, std::uint16_t type, std::uint16_t flags, std::uint64_t cookie,
                        std::uint64_t off, std::uint32_t len,
                        std::span<const std::byte> payload = {},
                        std::vector<std::byte>* data = nullptr) {
    RequestHeader h = encode_request(type, flags, cookie, off, len);
    std::array<iovec, 2> iov = {iovec{h.data(), h.size()},
                                iovec{const_cast<std::byte*>(payload.data()), payload.size()}};
    EXPECT_EQ(send_all(fd, iov, 0), 0);
    ReplyHeader raw{};
    SimpleReply r;
    if (recv_all(fd, raw) != 0) {
        ADD_FAILURE() << "no reply";
        return r;
    }
    r = decode_reply(raw);
    EXPECT_EQ(r.magic, kSimpleReplyMagic);
    EXPECT_EQ(r.cookie, cookie);
    if (data != nullptr && r.error == 0) {
        data->resize(len);
        EXPECT_EQ(recv_all(fd, *data), 0);
    }
    return r;
}

/// A server in the transmission phase, reached with our own client's handshake.
struct RawSession {
    Server server;
    int fd;
    explicit RawSession(const ServerConfig& cfg = config()) : server(cfg), fd(server.client()) {
        auto info = handshake(fd, "disk", "test");
        EXPECT_TRUE(info.ok()) << info.status().message();
    }
};

// --- libnbd: handshake -------------------------------------------------------------------------

TEST(NbdServer, LibnbdSeesTheExportAsOffered) {
    Server s(config());
    Libnbd h;
    connect(h, s);
    EXPECT_EQ(nbd_get_size(h), static_cast<int64_t>(kSize));
    EXPECT_EQ(nbd_is_read_only(h), 0);
    EXPECT_EQ(nbd_can_flush(h), 1);
    EXPECT_EQ(nbd_can_fua(h), 1);
    EXPECT_EQ(nbd_can_trim(h), 1);
    EXPECT_EQ(nbd_can_zero(h), 1);
    EXPECT_TRUE(s.multi_conn()) << "ram says multi_conn=1";
    EXPECT_EQ(nbd_can_multi_conn(h), 1);
    EXPECT_EQ(nbd_can_cache(h), 0);
    EXPECT_EQ(nbd_can_df(h), 0);
    EXPECT_EQ(nbd_get_structured_replies_negotiated(h), 0) << "simple replies only";
    EXPECT_EQ(nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM), 1);
    EXPECT_EQ(nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED), 4096);
    EXPECT_EQ(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM), 2 << 20);
    EXPECT_STREQ(nbd_get_protocol(h), "newstyle-fixed");
}

TEST(NbdServer, FeaturesDecideTheFlags) {
    Server s(config(0));
    Libnbd h;
    connect(h, s);
    EXPECT_EQ(nbd_can_flush(h), 0);
    EXPECT_EQ(nbd_can_fua(h), 0);
    EXPECT_EQ(nbd_can_trim(h), 0);
    EXPECT_EQ(nbd_can_zero(h), 0);
    EXPECT_EQ(nbd_is_read_only(h), 0);

    Server ro(config(USERBLK_F_READ_ONLY));
    Libnbd r;
    connect(r, ro);
    EXPECT_EQ(nbd_is_read_only(r), 1);
}

TEST(NbdServer, MultiConnOnlyWhereTheBackendSaysSo) {
    for (const char* name : {"null", "ram"}) {
        auto b = find_backend(name)->make(BackendConfig{kSize, 512, 1, 0, {}});
        ASSERT_TRUE(b.ok());
        EXPECT_TRUE(backend_multi_conn(*b.value())) << name;
    }
    // The forward backend says nothing: what its server caches is not known.
    Capabilities caps;
    find_backend("forward")->describe(caps);
    EXPECT_FALSE(caps.get("multi_conn").has_value());
    EXPECT_EQ(transmission_flags(0, false), kFlagHasFlags);
    EXPECT_EQ(transmission_flags(USERBLK_F_FLUSH, false),
              kFlagHasFlags | kFlagSendFlush | kFlagSendFua);
    EXPECT_EQ(transmission_flags(USERBLK_F_DISCARD | USERBLK_F_READ_ONLY, true),
              kFlagHasFlags | kFlagSendTrim | kFlagReadOnly | kFlagCanMultiConn);
}

TEST(NbdServer, OptModeListInfoAndGo) {
    Server s(config());
    Libnbd h;
    ASSERT_EQ(nbd_set_opt_mode(h, true), 0);
    ASSERT_EQ(nbd_set_export_name(h, "disk"), 0);
    ASSERT_EQ(nbd_connect_socket(h, s.take_client()), 0) << nbd_error();
    std::vector<std::string> names;
    nbd_list_callback list{[](void* user, const char* name, const char* /*description*/) {
                               static_cast<std::vector<std::string>*>(user)->emplace_back(name);
                               return 0;
                           },
                           &names, nullptr};
    EXPECT_EQ(nbd_opt_list(h, list), 1) << nbd_error();
    EXPECT_EQ(names, std::vector<std::string>{"disk"});
    ASSERT_EQ(nbd_opt_info(h), 0) << nbd_error();
    EXPECT_EQ(nbd_get_size(h), static_cast<int64_t>(kSize));
    ASSERT_EQ(nbd_opt_go(h), 0) << nbd_error();
    std::vector<std::byte> back(512);
    EXPECT_EQ(nbd_pread(h, back.data(), back.size(), 0, 0), 0) << nbd_error();
}

TEST(NbdServer, OptAbortEndsTheNegotiation) {
    Server s(config());
    {
        Libnbd h;
        ASSERT_EQ(nbd_set_opt_mode(h, true), 0);
        ASSERT_EQ(nbd_connect_socket(h, s.take_client()), 0) << nbd_error();
        EXPECT_EQ(nbd_opt_abort(h), 0) << nbd_error();
    }
    s.join();
    EXPECT_TRUE(s.negotiated_ok_) << s.negotiate_error_;
    EXPECT_TRUE(s.ended_in_negotiation_);
}

TEST(NbdServer, UnknownExportIsRefused) {
    Server s(config());
    Libnbd h;
    ASSERT_EQ(nbd_set_export_name(h, "nope"), 0);
    EXPECT_EQ(nbd_connect_socket(h, s.take_client()), -1);
    EXPECT_EQ(nbd_get_errno(), ENOENT) << nbd_error();
}

TEST(NbdServer, TheDefaultExportNameIsTheExport) {
    Server s(config());
    Libnbd h;
    connect(h, s, "");
    EXPECT_EQ(nbd_get_size(h), static_cast<int64_t>(kSize));
}

// --- libnbd: data ------------------------------------------------------------------------------

TEST(NbdServer, ReadsReturnWhatWasWritten) {
    Server s(config());
    Libnbd h;
    connect(h, s);
    // From one sector to above the in-place limit of the receive buffer, to the largest payload.
    const std::vector<std::pair<std::uint64_t, std::size_t>> cases = {{0, 512},
                                                                      {4096, 4096},
                                                                      {1 << 20, 65536},
                                                                      {3 << 20, 200 * 1024},
                                                                      {kSize - (2 << 20), 2 << 20},
                                                                      {777, 1000}};
    unsigned seed = 1;
    for (auto [off, len] : cases) {
        auto data = pattern(len, seed++);
        ASSERT_EQ(nbd_pwrite(h, data.data(), len, off, 0), 0) << nbd_error();
        std::vector<std::byte> back(len);
        ASSERT_EQ(nbd_pread(h, back.data(), len, off, 0), 0) << nbd_error();
        EXPECT_EQ(back, data) << "offset " << off << " length " << len;
        std::vector<std::byte> stored(len);
        QueueStats qs;
        auto q = BackendQueue::open(s.backend(), 9, 0, qs);
        ASSERT_TRUE(q.ok());
        ASSERT_EQ(s.backend().read(q.value(), off, stored), 0);
        EXPECT_EQ(stored, data) << "the backend holds the data";
    }
    ASSERT_EQ(nbd_shutdown(h, 0), 0) << nbd_error();
    s.join();
    StatsSnapshot st = s.stats();
    std::uint64_t moved = 0;
    for (auto [off, len] : cases) {
        moved += 2 * len;
    }
    EXPECT_EQ(st.bytes[static_cast<std::size_t>(OpKind::write)], moved / 2);
    EXPECT_EQ(st.bytes[static_cast<std::size_t>(OpKind::read)], moved / 2);
    EXPECT_EQ(st.user_data_bytes, moved) << "every byte entered the server's memory";
    EXPECT_EQ(st.io_errors, 0U);
}

TEST(NbdServer, PipelinedRequestsAreBatched) {
    Server s(config());
    Libnbd h;
    connect(h, s);
    constexpr int kN = 64;
    std::vector<std::vector<std::byte>> data;
    std::vector<int64_t> cookies;
    for (int i = 0; i < kN; ++i) {
        data.push_back(pattern(4096, 100 + static_cast<unsigned>(i)));
        int64_t c = nbd_aio_pwrite(h, data.back().data(), 4096, static_cast<uint64_t>(i) * 8192,
                                   NBD_NULL_COMPLETION, 0);
        ASSERT_GT(c, 0) << nbd_error();
        cookies.push_back(c);
    }
    std::vector<std::vector<std::byte>> back(kN, std::vector<std::byte>(4096));
    for (int i = 0; i < kN; ++i) {
        int64_t c = nbd_aio_pread(h, back[static_cast<std::size_t>(i)].data(), 4096,
                                  static_cast<uint64_t>(i) * 8192, NBD_NULL_COMPLETION, 0);
        ASSERT_GT(c, 0) << nbd_error();
        cookies.push_back(c);
    }
    while (nbd_aio_in_flight(h) > 0) {
        ASSERT_GE(nbd_poll(h, -1), 0) << nbd_error();
    }
    for (int64_t c : cookies) {
        EXPECT_EQ(nbd_aio_command_completed(h, static_cast<uint64_t>(c)), 1) << nbd_error();
    }
    EXPECT_EQ(back, data);
    ASSERT_EQ(nbd_shutdown(h, 0), 0);
    s.join();
    StatsSnapshot st = s.stats();
    EXPECT_EQ(st.requests[static_cast<std::size_t>(OpKind::write)], static_cast<std::uint64_t>(kN));
    EXPECT_EQ(st.requests[static_cast<std::size_t>(OpKind::read)], static_cast<std::uint64_t>(kN));
}

TEST(NbdServer, RequestsSentTogetherAreTakenAndAnsweredTogether) {
    RawSession r;
    constexpr std::size_t kN = 32;
    std::vector<std::byte> out;
    for (std::size_t i = 0; i < kN; ++i) {
        RequestHeader h = encode_request(kCmdFlush, 0, 100 + i, 0, 0);
        out.insert(out.end(), h.begin(), h.end());
    }
    send_raw(r.fd, out);
    for (std::size_t i = 0; i < kN; ++i) {
        ReplyHeader raw{};
        ASSERT_EQ(recv_all(r.fd, raw), 0);
        EXPECT_EQ(decode_reply(raw).cookie, 100 + i) << "in order";
        EXPECT_EQ(decode_reply(raw).error, 0U);
    }
    r.server.stop();
    StatsSnapshot st = r.server.stats();
    EXPECT_EQ(st.requests[static_cast<std::size_t>(OpKind::flush)], kN);
    EXPECT_EQ(st.request_batches.max, kN) << "one recv() took them all";
    EXPECT_EQ(st.completion_batches.max, kN) << "one send() answered them all";
    EXPECT_EQ(st.write_calls, 1U);
}

TEST(NbdServer, FlushAndFua) {
    Server s(config());
    Libnbd h;
    connect(h, s);
    auto data = pattern(4096, 3);
    EXPECT_EQ(nbd_pwrite(h, data.data(), data.size(), 0, LIBNBD_CMD_FLAG_FUA), 0) << nbd_error();
    EXPECT_EQ(nbd_flush(h, 0), 0) << nbd_error();
    EXPECT_EQ(nbd_trim(h, 4096, 8192, LIBNBD_CMD_FLAG_FUA), 0) << nbd_error();
    ASSERT_EQ(nbd_shutdown(h, 0), 0);
    s.join();
    StatsSnapshot st = s.stats();
    EXPECT_EQ(st.requests[static_cast<std::size_t>(OpKind::flush)], 1U);
    EXPECT_EQ(st.requests[static_cast<std::size_t>(OpKind::discard)], 1U);
    EXPECT_EQ(st.io_errors, 0U);
}

TEST(NbdServer, TrimAndWriteZeroesReadBackAsZerosOnRam) {
    Server s(config());
    Libnbd h;
    connect(h, s);
    auto data = pattern(65536, 4);
    ASSERT_EQ(nbd_pwrite(h, data.data(), data.size(), 0, 0), 0) << nbd_error();
    // libnbd's order: count, then offset.
    // The trimmed block [57344, 61440) is outside both zeroed ranges.
    ASSERT_EQ(nbd_trim(h, 4096, 57344, 0), 0) << nbd_error();
    ASSERT_EQ(nbd_zero(h, 40000, 3000, 0), 0) << nbd_error();
    ASSERT_EQ(nbd_zero(h, 50000, 4096, LIBNBD_CMD_FLAG_NO_HOLE), 0) << nbd_error();
    std::vector<std::byte> back(65536);
    ASSERT_EQ(nbd_pread(h, back.data(), back.size(), 0, 0), 0);
    auto want = data;
    std::fill(want.begin() + 57344, want.begin() + 57344 + 4096, std::byte{0});
    std::fill(want.begin() + 3000, want.begin() + 3000 + 40000, std::byte{0});
    std::fill(want.begin() + 4096, want.begin() + 4096 + 50000, std::byte{0});
    EXPECT_EQ(back, want);
}

TEST(NbdServer, ShutdownEndsTheConnectionCleanly) {
    Server s(config());
    {
        Libnbd h;
        connect(h, s);
        EXPECT_EQ(nbd_shutdown(h, 0), 0) << nbd_error();
    }
    s.join();
    EXPECT_TRUE(s.served_ok_) << s.serve_error_;
}

// --- libnbd: errors ------------------------------------------------------------------------------

TEST(NbdServer, OutOfRangeIsEinvalOrEnospcAndTheConnectionGoesOn) {
    Server s(config());
    Libnbd h;
    connect(h, s);
    ASSERT_EQ(nbd_set_strict_mode(h, 0), 0); // let libnbd send what it would refuse itself
    std::vector<std::byte> buf(4096);
    EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), kSize - 512, 0), -1);
    EXPECT_EQ(nbd_get_errno(), EINVAL) << nbd_error();
    EXPECT_EQ(nbd_pwrite(h, buf.data(), buf.size(), kSize, 0), -1);
    EXPECT_EQ(nbd_get_errno(), ENOSPC) << nbd_error();
    EXPECT_EQ(nbd_trim(h, 4096, UINT64_MAX - 100, 0), -1);
    EXPECT_EQ(nbd_get_errno(), EINVAL) << nbd_error();
    EXPECT_EQ(nbd_zero(h, 8192, kSize - 4096, 0), -1);
    EXPECT_EQ(nbd_get_errno(), ENOSPC) << nbd_error();
    EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), kSize - 4096, 0), 0) << nbd_error();
    ASSERT_EQ(nbd_shutdown(h, 0), 0);
    s.join();
    EXPECT_EQ(s.stats().io_errors, 4U);
    EXPECT_EQ(s.stats().protocol_errors, 0U) << "a bad range is not a malformed request";
}

TEST(NbdServer, FlagsAndCommandsNotOfferedAreEinval) {
    Server s(config(0));
    Libnbd h;
    connect(h, s);
    ASSERT_EQ(nbd_set_strict_mode(h, 0), 0);
    std::vector<std::byte> buf(4096);
    EXPECT_EQ(nbd_flush(h, 0), -1);
    EXPECT_EQ(nbd_get_errno(), EINVAL) << nbd_error();
    EXPECT_EQ(nbd_trim(h, 4096, 0, 0), -1);
    EXPECT_EQ(nbd_get_errno(), EINVAL) << nbd_error();
    EXPECT_EQ(nbd_zero(h, 4096, 0, 0), -1);
    EXPECT_EQ(nbd_get_errno(), EINVAL) << nbd_error();
    EXPECT_EQ(nbd_pwrite(h, buf.data(), buf.size(), 0, LIBNBD_CMD_FLAG_FUA), -1);
    EXPECT_EQ(nbd_get_errno(), EINVAL) << nbd_error();
    EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), 0, LIBNBD_CMD_FLAG_DF), -1);
    EXPECT_EQ(nbd_get_errno(), EINVAL) << nbd_error();
    EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), 0, 0), 0) << nbd_error();
}

TEST(NbdServer, WritesToAReadOnlyExportAreEperm) {
    Server s(config(USERBLK_F_READ_ONLY | USERBLK_F_DISCARD));
    Libnbd h;
    connect(h, s);
    ASSERT_EQ(nbd_set_strict_mode(h, 0), 0);
    std::vector<std::byte> buf(4096);
    EXPECT_EQ(nbd_pwrite(h, buf.data(), buf.size(), 0, 0), -1);
    EXPECT_EQ(nbd_get_errno(), EPERM) << nbd_error();
    EXPECT_EQ(nbd_trim(h, 4096, 0, 0), -1);
    EXPECT_EQ(nbd_get_errno(), EPERM) << nbd_error();
    EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), 0, 0), 0) << nbd_error();
}

// --- raw: negotiation --------------------------------------------------------------------------

TEST(NbdServer, UnknownOptionsAreUnsupportedAndNegotiationGoesOn) {
    Server s(config());
    int fd = s.client();
    raw_hello(fd);
    for (std::uint32_t opt : {42U, kOptStructuredReply, kOptStartTls, 9U, 10U}) {
        send_option(fd, opt, {});
        OptionReply r = read_option_reply(fd);
        EXPECT_EQ(r.option, opt);
        EXPECT_EQ(r.type, kRepErrUnsup) << "option " << opt;
    }
    send_option(fd, kOptList, bytes("x"));
    EXPECT_EQ(read_option_reply(fd).type, kRepErrInvalid) << "NBD_OPT_LIST takes no data";
    send_option(fd, kOptGo, bytes("\0\0"));
    EXPECT_EQ(read_option_reply(fd).type, kRepErrInvalid) << "truncated NBD_OPT_GO";
    send_option(fd, kOptInfo, go_data("other"));
    OptionReply unknown = read_option_reply(fd);
    EXPECT_EQ(unknown.type, kRepErrUnknown);
    std::string msg(reinterpret_cast<const char*>(unknown.data.data()), unknown.data.size());
    EXPECT_EQ(msg, "no export 'other' (this server has 'disk')");
    send_option(fd, kOptGo, go_data("disk", {kInfoBlockSize, kInfoName, kInfoDescription}));
    OptionReply exp = read_option_reply(fd);
    ASSERT_EQ(exp.type, kRepInfo);
    ASSERT_EQ(exp.data.size(), 12U);
    EXPECT_EQ(get_be<std::uint16_t>(exp.data.data()), kInfoExport);
    EXPECT_EQ(get_be<std::uint64_t>(exp.data.data() + 2), kSize);
    OptionReply bs = read_option_reply(fd);
    ASSERT_EQ(bs.type, kRepInfo);
    ASSERT_EQ(bs.data.size(), 14U);
    EXPECT_EQ(get_be<std::uint32_t>(bs.data.data() + 10), 2U << 20);
    OptionReply name = read_option_reply(fd);
    ASSERT_EQ(name.type, kRepInfo);
    EXPECT_EQ(get_be<std::uint16_t>(name.data.data()), kInfoName);
    EXPECT_EQ(read_option_reply(fd).type, kRepAck);
    // Transmission: a read works.
    std::vector<std::byte> data;
    EXPECT_EQ(raw_request(fd, kCmdRead, 0, 7, 0, 512, {}, &data).error, 0U);
}

TEST(NbdServer, ExportNameOptionAnswersWithoutOrWithZeroes) {
    for (bool no_zeroes : {true, false}) {
        Server s(config());
        int fd = s.client();
        raw_hello(fd, kClientFixedNewstyle | (no_zeroes ? kClientNoZeroes : 0));
        send_option(fd, kOptExportName, bytes("disk"));
        std::vector<std::byte> reply(no_zeroes ? 10 : 10 + kExportNamePadding);
        ASSERT_EQ(recv_all(fd, reply), 0);
        EXPECT_EQ(get_be<std::uint64_t>(reply.data()), kSize);
        EXPECT_EQ(get_be<std::uint16_t>(reply.data() + 8), config().flags);
        EXPECT_TRUE(all_zero(std::span(reply).subspan(10)));
        std::vector<std::byte> data;
        EXPECT_EQ(raw_request(fd, kCmdRead, 0, 1, 0, 4096, {}, &data).error, 0U) << no_zeroes;
    }
}

TEST(NbdServer, OldNewstyleClientMaySendOnlyExportName) {
    {
        Server s(config());
        int fd = s.client();
        raw_hello(fd, 0); // no NBD_FLAG_C_FIXED_NEWSTYLE
        send_option(fd, kOptExportName, {});
        std::vector<std::byte> reply(10 + kExportNamePadding);
        ASSERT_EQ(recv_all(fd, reply), 0);
        EXPECT_EQ(get_be<std::uint64_t>(reply.data()), kSize);
    }
    Server s(config());
    int fd = s.client();
    raw_hello(fd, 0);
    send_option(fd, kOptList, {});
    EXPECT_TRUE(closed_by_peer(fd));
    s.join();
    EXPECT_FALSE(s.negotiated_ok_);
    EXPECT_NE(s.negotiate_error_.find("without fixed newstyle"), std::string::npos)
        << s.negotiate_error_;
}

TEST(NbdServer, UnknownExportWithExportNameClosesTheConnection) {
    Server s(config());
    int fd = s.client();
    raw_hello(fd);
    send_option(fd, kOptExportName, bytes("other"));
    EXPECT_TRUE(closed_by_peer(fd));
    s.join();
    EXPECT_NE(s.negotiate_error_.find("unknown export 'other'"), std::string::npos)
        << s.negotiate_error_;
}

TEST(NbdServer, NegotiationViolationsCloseTheConnection) {
    {
        Server s(config());
        int fd = s.client();
        raw_hello(fd, 1U << 5); // unknown client flag
        EXPECT_TRUE(closed_by_peer(fd));
        s.join();
        EXPECT_NE(s.negotiate_error_.find("unknown client flags 0x20"), std::string::npos)
            << s.negotiate_error_;
    }
    {
        Server s(config());
        int fd = s.client();
        raw_hello(fd);
        send_option(fd, kOptGo, go_data("disk"), 0x1234);
        EXPECT_TRUE(closed_by_peer(fd));
        s.join();
        EXPECT_NE(s.negotiate_error_.find("bad magic"), std::string::npos) << s.negotiate_error_;
    }
}

// --- raw: transmission -------------------------------------------------------------------------

TEST(NbdServer, UnknownCommandsAndFlagsAreEinvalAndTheStreamStaysInStep) {
    RawSession r;
    std::vector<std::byte> data;
    for (std::uint16_t type : {std::uint16_t{9}, kCmdCache, kCmdBlockStatus}) {
        EXPECT_EQ(raw_request(r.fd, type, 0, 10 + type, 0, 4096).error, kEinval) << type;
    }
    EXPECT_EQ(raw_request(r.fd, kCmdRead, 1U << 7, 20, 0, 512).error, kEinval);
    EXPECT_EQ(raw_request(r.fd, kCmdRead, kCmdFlagNoHole, 21, 0, 512).error, kEinval);
    // A WRITE with a bad flag: its payload is consumed, then refused.
    auto payload = pattern(4096, 5);
    EXPECT_EQ(raw_request(r.fd, kCmdWrite, kCmdFlagFastZero, 22, 0, 4096, payload).error, kEinval);
    EXPECT_EQ(raw_request(r.fd, kCmdRead, 0, 23, 0, 4096, {}, &data).error, 0U);
    EXPECT_TRUE(all_zero(data)) << "the refused write was not done";
    // FUA is offered: valid on every command.
    EXPECT_EQ(raw_request(r.fd, kCmdWrite, kCmdFlagFua, 24, 0, 4096, payload).error, 0U);
    EXPECT_EQ(raw_request(r.fd, kCmdFlush, kCmdFlagFua, 25, 0, 0).error, 0U);
    EXPECT_EQ(raw_request(r.fd, kCmdRead, 0, 26, 0, 4096, {}, &data).error, 0U);
    EXPECT_EQ(data, payload);
    r.server.stop();
    EXPECT_EQ(r.server.stats().protocol_errors, 6U);
}

TEST(NbdServer, OversizedRequestsAreEinvalAndTheStreamStaysInStep) {
    ServerConfig cfg = config();
    cfg.max_payload = 64 * 1024;
    RawSession r(cfg);
    std::vector<std::byte> data;
    EXPECT_EQ(raw_request(r.fd, kCmdRead, 0, 1, 0, 64 * 1024 + 512).error, kEinval);
    auto big = pattern(200 * 1024, 6);
    EXPECT_EQ(
        raw_request(r.fd, kCmdWrite, 0, 2, 0, static_cast<std::uint32_t>(big.size()), big).error,
        kEinval);
    auto ok = pattern(64 * 1024, 7);
    EXPECT_EQ(raw_request(r.fd, kCmdWrite, 0, 3, 0, 64 * 1024, ok).error, 0U);
    EXPECT_EQ(raw_request(r.fd, kCmdRead, 0, 4, 0, 64 * 1024, {}, &data).error, 0U);
    EXPECT_EQ(data, ok);
}

TEST(NbdServer, BadRequestMagicClosesTheConnection) {
    RawSession r;
    RequestHeader h = encode_request(kCmdRead, 0, 1, 0, 512);
    put_be<std::uint32_t>(h.data(), 0xdeadbeef);
    send_raw(r.fd, h);
    EXPECT_TRUE(closed_by_peer(r.fd));
    r.server.join();
    EXPECT_FALSE(r.server.served_ok_);
    EXPECT_NE(r.server.serve_error_.find("request with bad magic 0xdeadbeef"), std::string::npos)
        << r.server.serve_error_;
    EXPECT_EQ(r.server.stats().protocol_errors, 1U);
}

TEST(NbdServer, DiscClosesAfterAnsweringWhatCameBefore) {
    RawSession r;
    // A write and a DISC in one send: the write is answered, then the connection closed.
    auto payload = pattern(4096, 8);
    RequestHeader w = encode_request(kCmdWrite, 0, 5, 0, 4096);
    RequestHeader d = encode_request(kCmdDisc, 0, 6, 0, 0);
    std::array<iovec, 3> iov = {iovec{w.data(), w.size()}, iovec{payload.data(), payload.size()},
                                iovec{d.data(), d.size()}};
    ASSERT_EQ(send_all(r.fd, iov, 0), 0);
    ReplyHeader raw{};
    ASSERT_EQ(recv_all(r.fd, raw), 0);
    EXPECT_EQ(decode_reply(raw).cookie, 5U);
    EXPECT_EQ(decode_reply(raw).error, 0U);
    EXPECT_TRUE(closed_by_peer(r.fd));
    r.server.join();
    EXPECT_TRUE(r.server.served_ok_) << r.server.serve_error_;
}

TEST(NbdServer, StopEndsABlockedServer) {
    RawSession r;
    auto start = std::chrono::steady_clock::now();
    r.server.stop();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
    EXPECT_TRUE(r.server.served_ok_) << r.server.serve_error_;
    EXPECT_TRUE(closed_by_peer(r.fd));
}

TEST(NbdServer, NullBackendReadsZeros) {
    Server s(config(), "null");
    Libnbd h;
    connect(h, s);
    auto data = pattern(8192, 9);
    ASSERT_EQ(nbd_pwrite(h, data.data(), data.size(), 0, 0), 0) << nbd_error();
    std::vector<std::byte> back(8192, std::byte{1});
    ASSERT_EQ(nbd_pread(h, back.data(), back.size(), 0, 0), 0) << nbd_error();
    EXPECT_TRUE(all_zero(back));
}

} // namespace
