// The uapi mode of a userblk.ko transport, as the registry gives it (`userblk --dump-transport
// NAME`: kind=userblk, mode_number=N), so that no test program keeps its own list of names and
// modes. The CLI is the build's (USERBLK_CLI_PATH, compiled in; the VM sees the build at the
// same path), or USERBLK_CLI from the environment.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#ifndef USERBLK_CLI_PATH
#error "USERBLK_CLI_PATH must name the userblk program (tests/vm/CMakeLists.txt sets it)"
#endif

namespace userblk_test {

/// The mode of transport name, or 0 when the registry has no userblk.ko transport of that name
/// (or the CLI cannot be run: the caller's error then names the transport).
inline uint32_t mode_of(const std::string& name) {
    if (name.empty() ||
        name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
        return 0;
    const char* env = std::getenv("USERBLK_CLI");
    std::string cli = env != nullptr && *env != '\0' ? env : USERBLK_CLI_PATH;
    if (cli.find('\'') != std::string::npos)
        return 0;
    std::string cmd = "'" + cli + "' --dump-transport " + name + " 2>/dev/null";
    FILE* f = ::popen(cmd.c_str(), "r");
    if (f == nullptr)
        return 0;
    char line[512];
    bool userblk = false;
    unsigned long mode = 0;
    while (std::fgets(line, sizeof(line), f) != nullptr) {
        std::string l(line);
        if (l == "kind=userblk\n")
            userblk = true;
        else if (l.rfind("mode_number=", 0) == 0)
            mode = std::strtoul(l.c_str() + 12, nullptr, 10);
    }
    int status = ::pclose(f);
    return status == 0 && userblk ? static_cast<uint32_t>(mode) : 0;
}

} // namespace userblk_test
