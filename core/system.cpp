// Small helpers for code that sets up kernel devices: run a command, write a sysfs attribute,
// wait for a device node.
#include "system.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "unique_fd.h"

extern char** environ;

namespace userblk {

Status run_command(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    std::string line;
    for (const auto& a : argv) {
        line += (line.empty() ? "" : " ") + a;
    }
    pid_t pid = 0;
    int err = ::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ);
    if (err != 0) {
        return Status::from_errno(err, "cannot run '" + line + "'",
                                  err == ENOENT ? "is kmod installed? run 'make deps'" : "");
    }
    int status = 0;
    pid_t r = 0;
    do {
        r = ::waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        return Status::from_errno(errno, "waiting for '" + line + "'");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        return Status::from_errno(EIO, "'" + line + "' failed",
                                  WIFEXITED(status)
                                      ? "exit status " + std::to_string(WEXITSTATUS(status))
                                      : "killed by a signal");
    }
    return {};
}

Status write_attribute(const std::string& path, std::string_view value) {
    unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) {
        return Status::from_errno(errno, "cannot open " + path);
    }
    ssize_t n = ::write(fd.get(), value.data(), value.size());
    if (n < 0) {
        return Status::from_errno(errno, "cannot write '" + std::string(value) + "' to " + path);
    }
    return {};
}

Status wait_for_path(const std::string& path, unsigned timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    struct stat st {};
    while (::stat(path.c_str(), &st) != 0) {
        if (std::chrono::steady_clock::now() > deadline) {
            return Status::from_errno(ETIMEDOUT, path + " did not appear",
                                      "waited " + std::to_string(timeout_ms) + " ms");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return {};
}

} // namespace userblk
