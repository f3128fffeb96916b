#include "sockets.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/time.h>

namespace userblk::nbd {

namespace {

Status nodelay(int fd, std::string_view who) {
    int one = 1;
    if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
        return Status::from_errno(errno, std::string(who) + ": cannot set TCP_NODELAY");
    }
    return {};
}

} // namespace

Result<Listener> Listener::make(SocketKind kind, std::string_view who) {
    Listener l;
    const bool tcp = kind == SocketKind::tcp_loopback;
    l.fd.reset(::socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!l.fd) {
        return Status::from_errno(errno, std::string(who) + ": cannot make a socket");
    }
    int r = 0;
    if (tcp) {
        sockaddr_in in{};
        in.sin_family = AF_INET;
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        r = ::bind(l.fd.get(), reinterpret_cast<sockaddr*>(&in), sizeof(in));
    } else {
        sockaddr_un un{};
        un.sun_family = AF_UNIX;
        // Only the family: the kernel binds a unique abstract name (autobind).
        r = ::bind(l.fd.get(), reinterpret_cast<sockaddr*>(&un), sizeof(sa_family_t));
    }
    if (r != 0 || ::listen(l.fd.get(), 64) != 0) {
        return Status::from_errno(
            errno, std::string(who) + ": cannot listen on " + (tcp ? "127.0.0.1" : "a UNIX socket"),
            tcp ? "is the loopback interface up?" : "");
    }
    l.addr_len = sizeof(l.addr);
    if (::getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&l.addr), &l.addr_len) != 0) {
        return Status::from_errno(errno, std::string(who) + ": getsockname failed");
    }
    return l;
}

std::string Listener::address() const {
    if (addr.ss_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
        return "127.0.0.1:" + std::to_string(ntohs(in->sin_port));
    }
    const auto* un = reinterpret_cast<const sockaddr_un*>(&addr);
    std::size_t n = addr_len > sizeof(sa_family_t) ? addr_len - sizeof(sa_family_t) : 0;
    std::string name = "@";
    for (std::size_t i = 1; i < n; ++i) { // [0] is the abstract name's NUL
        name += un->sun_path[i];
    }
    return "unix socket " + name;
}

Result<unique_fd> Listener::connect(std::string_view who) const {
    unique_fd c(::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!c) {
        return Status::from_errno(errno, std::string(who) + ": cannot make a socket");
    }
    int r;
    do {
        r = ::connect(c.get(), reinterpret_cast<const sockaddr*>(&addr), addr_len);
    } while (r != 0 && errno == EINTR);
    if (r != 0) {
        return Status::from_errno(errno, std::string(who) + ": cannot connect to " + address());
    }
    if (addr.ss_family == AF_INET) {
        if (Status st = nodelay(c.get(), who); !st.ok()) {
            return st;
        }
    }
    return c;
}

Result<unique_fd> Listener::accept(std::string_view who) const {
    int r;
    do {
        r = ::accept4(fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        return Status::from_errno(errno, std::string(who) + ": accept on " + address() + " failed");
    }
    unique_fd s(r);
    if (addr.ss_family == AF_INET) {
        if (Status st = nodelay(s.get(), who); !st.ok()) {
            return st;
        }
    }
    return s;
}

Result<std::pair<unique_fd, unique_fd>> connected_pair(SocketKind kind, std::string_view who) {
    if (kind == SocketKind::unix_stream) {
        int fds[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
            return Status::from_errno(errno, std::string(who) + ": socketpair failed");
        }
        return std::pair{unique_fd(fds[0]), unique_fd(fds[1])};
    }
    auto l = Listener::make(kind, who);
    if (!l.ok()) {
        return l.status();
    }
    // One connection at a time through its own listener: the accepted socket is this client's.
    auto client = l->connect(who);
    if (!client.ok()) {
        return client.status();
    }
    // Another local process may connect to the port first: accept until the peer is our client
    // (its local address is the accepted socket's peer), dropping strangers.
    sockaddr_storage mine{};
    socklen_t mine_len = sizeof(mine);
    if (::getsockname(client->get(), reinterpret_cast<sockaddr*>(&mine), &mine_len) != 0) {
        return Status::from_errno(errno, std::string(who) + ": getsockname failed");
    }
    for (int attempt = 0; attempt < 8; ++attempt) {
        auto server = l->accept(who);
        if (!server.ok()) {
            return server.status();
        }
        sockaddr_storage peer{};
        socklen_t peer_len = sizeof(peer);
        if (::getpeername(server->get(), reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 &&
            peer_len == mine_len && std::memcmp(&peer, &mine, mine_len) == 0) {
            return std::pair{std::move(client).value(), std::move(server).value()};
        }
    }
    return Status::from_errno(ECONNREFUSED, std::string(who) + ": " + l->address(),
                              "other processes kept connecting before our own client");
}

Status set_timeouts(int fd, std::uint32_t ms, std::string_view who) {
    timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>(ms % 1000) * 1000};
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
        return Status::from_errno(errno, std::string(who) + ": cannot set socket timeouts");
    }
    return {};
}

} // namespace userblk::nbd
