#include "log.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace userblk {

void log_error(const char* fmt, ...) {
    // One buffer and one fputs, so lines from several queue threads do not interleave.
    char line[512];
    static constexpr char kPrefix[] = "userblk: ";
    std::memcpy(line, kPrefix, sizeof(kPrefix));
    std::size_t used = sizeof(kPrefix) - 1;
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(line + used, sizeof(line) - used - 1, fmt, ap); // keep room for '\n'
    va_end(ap);
    used = std::strlen(line);
    line[used] = '\n';
    line[used + 1] = '\0';
    std::fputs(line, stderr);
}

} // namespace userblk
