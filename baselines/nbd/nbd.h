// The nbd baseline: Linux's own nbd driver connected to our NBD server (nbd/server.h) on the
// project's Backend objects, one thread and one connection per queue, each connection a UNIX
// socket pair (or TCP over 127.0.0.1). The handshake runs in user space over each socket
// (nbd/client.h), then the sockets go to the driver (nbd/kernel.h); the disk is /dev/nbdN.
// docs/baselines.md says what it measures.
#pragma once

#include <memory>

#include "core/transport.h"

namespace userblk {

/// Its registry entry.
extern const TransportEntry transport_entry_nbd;

} // namespace userblk
