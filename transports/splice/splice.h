// The splice transport (USERBLK_MODE_SPLICE): descriptors and completions on the queue fd as in
// copy, without inline data; the data moves through the queue's data fd
// (USERBLK_IOC_SPLICE_DATA_FD), whose offset USERBLK_SPLICE_OFF(tag, gen, pos) names a request. With a
// backend that has a native pipe path (file, forward), a WRITE's data goes data fd -> pipe ->
// backend (file or socket) and a READ's data backend -> pipe -> data fd, all by splice: the data
// never enters the daemon's memory. With any other backend, pread()/pwrite() on the data fd
// move it through the daemon's buffer (counted in user_data_bytes), one copy each way, as copy.
#pragma once

#include <memory>

#include "core/transport.h"

namespace userblk {

/// Its registry entry.
extern const TransportEntry transport_entry_splice;

} // namespace userblk
