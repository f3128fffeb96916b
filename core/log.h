// Diagnostics on stderr, prefixed "userblk: ". Safe from any thread; allocation-free.
#pragma once

namespace userblk {

/// Prints "userblk: <message>\n" on stderr (printf format).
void log_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

} // namespace userblk
