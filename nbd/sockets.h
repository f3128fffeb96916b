// The sockets the nbd and nbdkit transports hand to the kernel's nbd driver: a UNIX stream socket
// pair (our own server), a listening socket a server is started on (nbdkit, socket activation),
// or TCP over 127.0.0.1; and the socket options the handshake and the driver need.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include <sys/socket.h>
#include <sys/un.h>

#include "core/config.h"
#include "core/status.h"
#include "core/unique_fd.h"

namespace userblk::nbd {

/// A listening socket and the address that reaches it.
struct Listener {
    unique_fd fd;
    sockaddr_storage addr{};
    socklen_t addr_len = 0;

    /// A listener of kind: a UNIX stream socket with an abstract name the kernel picks (nothing
    /// in the file system to clean up), or TCP on 127.0.0.1 and a free port.
    static Result<Listener> make(SocketKind kind, std::string_view who);
    /// A new connection to it (TCP_NODELAY for TCP).
    [[nodiscard]] Result<unique_fd> connect(std::string_view who) const;
    /// The next connection made to it (TCP_NODELAY for TCP).
    [[nodiscard]] Result<unique_fd> accept(std::string_view who) const;
    /// "unix socket @00a3f" or "127.0.0.1:40123", for messages.
    [[nodiscard]] std::string address() const;
};

/// A connected pair of kind: {client end, server end}. For unix, socketpair(); for tcp, a
/// connection over 127.0.0.1 through a short-lived listener.
Result<std::pair<unique_fd, unique_fd>> connected_pair(SocketKind kind, std::string_view who);

/// Sets SO_RCVTIMEO and SO_SNDTIMEO of fd to ms (0: none). A socket handed to the nbd driver must
/// have none: the driver's receive thread would take an idle connection for a dead one.
Status set_timeouts(int fd, std::uint32_t ms, std::string_view who);

} // namespace userblk::nbd
