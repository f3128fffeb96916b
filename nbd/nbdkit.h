// nbdkit as a child process started by socket activation: the one launcher of Debian's nbdkit,
// used by the nbdkit reference, by `userblk nbdkit` (the harness's server for the forward
// backend) and by the unit tests. The caller makes the listening socket and hands it over as
// fd 3 (LISTEN_FDS=1), so the socket accepts connections before nbdkit runs: no race for a port,
// no readiness to wait for, nothing in the file system to clean up.
#pragma once

#include <string>
#include <vector>

#include <sys/types.h>

#include "core/status.h"
#include "core/unique_fd.h"

namespace userblk::nbd {

class NbdkitProcess {
public:
    NbdkitProcess() = default;
    NbdkitProcess(const NbdkitProcess&) = delete;
    NbdkitProcess& operator=(const NbdkitProcess&) = delete;
    ~NbdkitProcess() { stop(); }

    /// Runs argv (argv[0] looked up on PATH: "nbdkit") with listener as its fd 3. The child starts
    /// with no signal blocked and SIGPIPE at its default, and dies with the thread that called
    /// start() (PR_SET_PDEATHSIG, until nbdkit's own --exit-with-parent takes over).
    Status start(const std::vector<std::string>& argv, unique_fd listener);

    /// Why it is gone ("exited with status 1", "was killed by signal 9", or a hint when nbdkit
    /// could not be run), or "" while it runs.
    std::string ended();

    /// SIGTERM, then SIGKILL after 5 s; reaps it. Idempotent.
    void stop() noexcept;
    /// SIGKILL now and reaps it: its connections are closed by the kernel. Idempotent.
    void kill() noexcept;
    /// Waits until it exits; its end as ended() says it.
    std::string wait();

    [[nodiscard]] pid_t pid() const noexcept { return pid_; }

private:
    pid_t pid_ = -1;
};

} // namespace userblk::nbd
