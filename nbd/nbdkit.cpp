// nbdkit by socket activation (nbdkit.h).
#include "nbd/nbdkit.h"

#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <string_view>
#include <thread>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"

extern char** environ; // NOLINT(readability-redundant-declaration)

namespace userblk::nbd {

namespace {

/// "exited with status 1", "was killed by signal 9", or "" while it runs.
std::string child_end(pid_t pid, bool wait) {
    int status = 0;
    pid_t r;
    do {
        r = ::waitpid(pid, &status, wait ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r != pid) {
        return {};
    }
    if (WIFEXITED(status)) {
        return "exited with status " + std::to_string(WEXITSTATUS(status));
    }
    return "was killed by signal " + std::to_string(WTERMSIG(status));
}

/// why, or for the exit status execvpe's failure gives, what to do about it.
std::string with_hint(std::string why) {
    if (why == "exited with status 127") {
        return "could not be run (exit status 127: is nbdkit installed? apt-get install nbdkit, "
               "or make deps)";
    }
    return why;
}

} // namespace

Status NbdkitProcess::start(const std::vector<std::string>& args, unique_fd listener) {
    // Everything the child needs is made before fork(): it only formats its pid.
    std::vector<std::string> argv_s = args;
    std::vector<char*> argv;
    for (auto& a : argv_s) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (char** e = environ; *e != nullptr; ++e) {
        if (std::string_view(*e).rfind("LISTEN_", 0) != 0) {
            envp.push_back(*e);
        }
    }
    std::string fds = "LISTEN_FDS=1";
    std::array<char, 32> pid_var{};
    envp.push_back(fds.data());
    envp.push_back(pid_var.data());
    envp.push_back(nullptr);
    const int lfd = listener.get();
    const pid_t parent = ::getpid();

    pid_ = ::fork();
    if (pid_ < 0) {
        pid_ = -1;
        return Status::from_errno(errno, "nbdkit: cannot fork");
    }
    if (pid_ == 0) {
        // The child: async-signal-safe calls only. The daemon blocks some signals and
        // ignores SIGPIPE; nbdkit must start with neither.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        std::signal(SIGPIPE, SIG_DFL);
        // Until nbdkit's own --exit-with-parent: a daemon that dies now takes nbdkit along
        // (the death signal survives exec).
        if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) {
            ::_exit(125);
        }
        char digits[16];
        int n = 0;
        for (auto v = static_cast<unsigned>(::getpid()); v > 0 || n == 0; v /= 10) {
            digits[n++] = static_cast<char>('0' + v % 10);
        }
        std::memcpy(pid_var.data(), "LISTEN_PID=", 11);
        for (int i = 0; i < n; ++i) {
            pid_var[static_cast<std::size_t>(11 + i)] = digits[n - 1 - i];
        }
        if (lfd == 3) {
            ::fcntl(3, F_SETFD, 0);
        } else if (::dup2(lfd, 3) < 0) {
            ::_exit(126);
        }
        ::execvpe(argv[0], argv.data(), envp.data());
        ::_exit(127);
    }
    // Our copy of the listener closes here: once nbdkit is gone, connecting is refused.
    return {};
}

std::string NbdkitProcess::ended() {
    if (pid_ <= 0) {
        return "is not running";
    }
    std::string why = child_end(pid_, false);
    if (why.empty()) {
        return why;
    }
    pid_ = -1;
    return with_hint(std::move(why));
}

void NbdkitProcess::stop() noexcept {
    if (pid_ <= 0) {
        return;
    }
    ::kill(pid_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (child_end(pid_, false).empty()) {
        if (std::chrono::steady_clock::now() > deadline) {
            log_error("nbdkit (pid %d) did not exit 5 s after SIGTERM: killing it",
                      static_cast<int>(pid_));
            ::kill(pid_, SIGKILL);
            (void)child_end(pid_, true);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
}

void NbdkitProcess::kill() noexcept {
    if (pid_ <= 0) {
        return;
    }
    ::kill(pid_, SIGKILL);
    (void)child_end(pid_, true);
    pid_ = -1;
}

std::string NbdkitProcess::wait() {
    if (pid_ <= 0) {
        return "is not running";
    }
    std::string why = child_end(pid_, true);
    pid_ = -1;
    return with_hint(std::move(why));
}

} // namespace userblk::nbd
