// The daemon's runtime (daemon.h): one device served until a signal or its deletion, in the
// foreground or as a daemon, its signals, its statistics files and its entry in the runtime
// directory.
#include "daemon.h"

#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "core/unique_fd.h"

namespace userblk::runtime {

int fail(int code, const std::string& message) {
    log_error("%s", message.c_str());
    return code;
}

/// Where serving daemons record themselves: $USERBLK_RUNTIME_DIR, else /run/userblk.
std::string directory() {
    const char* env = std::getenv("USERBLK_RUNTIME_DIR");
    return env != nullptr && *env != '\0' ? std::string(env) : std::string("/run/userblk");
}

/// The name of device id's entries: "<id>" for a userblk.ko device, "<transport>-<id>" for a
/// transport with ids of its own (ublk).
std::string entry_name(const TransportEntry* transport, std::uint32_t id) {
    if (transport != nullptr && transport->remove != nullptr) {
        return std::string(transport->name) + "-" + std::to_string(id);
    }
    return std::to_string(id);
}

/// <dir>/<name>.pid: "<pid> <start time>\n" of the daemon serving the device.
std::string pid_path(const std::string& name) {
    return directory() + "/" + name + ".pid";
}

/// <dir>/<name>.stats.json: the statistics that daemon writes on SIGUSR1.
std::string stats_path(const std::string& name) {
    return directory() + "/" + name + ".stats.json";
}

/// A process's start time (field 22 of /proc/PID/stat, clock ticks after boot): with the pid it
/// names one process, even after the pid is reused. nullopt if there is no such process.
std::optional<std::uint64_t> process_start_time(pid_t pid) {
    std::string path = "/proc/" + std::to_string(pid) + "/stat";
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) {
        return std::nullopt;
    }
    char buf[1024];
    std::size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    std::string_view stat(buf, n);
    // The command name (field 2) is in parentheses and may hold anything: count after the last ')'.
    auto paren = stat.rfind(')');
    if (paren == std::string_view::npos) {
        return std::nullopt;
    }
    stat.remove_prefix(paren + 1);
    for (int field = 3; field < 22; ++field) { // from the space before field 3 to field 22's
        auto sep = stat.find(' ', 1);
        if (sep == std::string_view::npos) {
            return std::nullopt;
        }
        stat.remove_prefix(sep);
    }
    stat.remove_prefix(1);
    std::uint64_t start = 0;
    auto [ptr, ec] = std::from_chars(stat.data(), stat.data() + stat.size(), start);
    if (ec != std::errc()) {
        return std::nullopt;
    }
    return start;
}

namespace {

/// Where `add` reports readiness and early failures: the terminal, or a daemon's parent.
class Reporter {
public:
    Reporter() = default;
    Reporter(const Reporter&) = delete;
    Reporter& operator=(const Reporter&) = delete;
    virtual ~Reporter() = default;
    /// The device is served: print "<id> <path>".
    virtual void ready(const DeviceInfo& info) = 0;
    /// The device could not be set up or served.
    virtual void failed(const std::string& message) = 0;
};

class TerminalReporter final : public Reporter {
public:
    void ready(const DeviceInfo& info) override {
        std::printf("%u %s\n", info.id, info.path.c_str());
        std::fflush(stdout);
    }
    void failed(const std::string& message) override { log_error("%s", message.c_str()); }
};

/// The daemon's side of the handshake: "OK <id> <path>\n" or "ERR <message>\n" on the pipe, then
/// stderr goes to the log file.
class DaemonReporter final : public Reporter {
public:
    DaemonReporter(unique_fd pipe, std::string log_path)
        : pipe_(std::move(pipe)), log_path_(std::move(log_path)) {}

    void ready(const DeviceInfo& info) override {
        // Detach from the terminal before telling the parent, so nothing is printed after it
        // returned.
        int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log >= 0) {
            ::dup2(log, STDERR_FILENO);
            ::close(log);
        } else {
            log_error("cannot open the log %s: %s; logging to /dev/null", log_path_.c_str(),
                      std::strerror(errno));
            redirect_to_null(STDERR_FILENO);
        }
        send("OK " + std::to_string(info.id) + " " + info.path + "\n");
        pipe_.reset();
    }

    void failed(const std::string& message) override {
        if (pipe_.valid()) {
            send("ERR " + message + "\n");
            pipe_.reset();
        } else {
            log_error("%s", message.c_str());
        }
    }

    static void redirect_to_null(int fd) {
        int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
            ::dup2(null, fd);
            ::close(null);
        }
    }

private:
    void send(const std::string& line) {
        std::size_t done = 0;
        while (done < line.size()) {
            ssize_t n = ::write(pipe_.get(), line.data() + done, line.size() - done);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return; // the parent is gone; nothing to tell
            }
            done += static_cast<std::size_t>(n);
        }
    }

    unique_fd pipe_;
    std::string log_path_;
};

/// Turns SIGINT, SIGTERM and SIGHUP into a stop request, on its own thread (signalfd), so the
/// teardown runs in normal code; a second one exits at once, without deleting the device.
/// SIGUSR1 runs the snapshot hook (the statistics file). Construct before any other thread: it
/// blocks the signals for every thread created after it.
class SignalWatcher {
public:
    SignalWatcher() {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGHUP);
        sigaddset(&set, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &set, nullptr);
        signals_.reset(::signalfd(-1, &set, SFD_CLOEXEC));
        quit_.reset(::eventfd(0, EFD_CLOEXEC));
        if (!signals_.valid() || !quit_.valid()) {
            log_error("cannot watch for signals: %s; stop the daemon with `userblk del`",
                      std::strerror(errno));
            return;
        }
        thread_ = std::jthread([this] { watch(); });
    }
    SignalWatcher(const SignalWatcher&) = delete;
    SignalWatcher& operator=(const SignalWatcher&) = delete;

    ~SignalWatcher() {
        if (thread_.joinable()) {
            std::uint64_t one = 1;
            if (::write(quit_.get(), &one, sizeof(one)) < 0) {
                log_error("cannot end the signal thread: %s", std::strerror(errno));
            }
            thread_.join();
        }
    }

    /// Runs hook on every SIGUSR1 (from the signal thread); nullptr removes it, waiting for a
    /// run in progress to finish.
    void set_snapshot(std::function<void()> hook) {
        std::lock_guard lock(hook_mutex_);
        snapshot_ = std::move(hook);
    }

    /// Stop requested by the first signal.
    [[nodiscard]] std::stop_token token() const noexcept { return token_; }

private:
    void watch() {
        int seen = 0;
        pollfd fds[2] = {{signals_.get(), POLLIN, 0}, {quit_.get(), POLLIN, 0}};
        while (true) {
            if (::poll(fds, 2, -1) < 0) {
                if (errno == EINTR) {
                    continue;
                }
                log_error("poll for signals failed: %s", std::strerror(errno));
                return;
            }
            if ((fds[1].revents & POLLIN) != 0) {
                return;
            }
            signalfd_siginfo si{};
            if ((fds[0].revents & POLLIN) == 0 ||
                ::read(signals_.get(), &si, sizeof(si)) != sizeof(si)) {
                continue;
            }
            if (si.ssi_signo == SIGUSR1) {
                std::lock_guard lock(hook_mutex_);
                if (snapshot_) {
                    snapshot_();
                } else {
                    log_error("SIGUSR1: no statistics yet (the device is being set up)");
                }
                continue;
            }
            if (++seen == 1) {
                stop_->request_stop();
                continue;
            }
            log_error("second signal (%s): exiting without deleting the device",
                      strsignal(static_cast<int>(si.ssi_signo)));
            ::_exit(128 + static_cast<int>(si.ssi_signo));
        }
    }

    // On the heap: GCC 12 warns (maybe-uninitialized) about a stop_source member built inline.
    std::unique_ptr<std::stop_source> stop_ = std::make_unique<std::stop_source>();
    std::stop_token token_ = stop_->get_token();
    unique_fd signals_;
    unique_fd quit_;
    std::mutex hook_mutex_;
    std::function<void()> snapshot_;
    std::jthread thread_;
};

/// Removes the watcher's snapshot hook when it goes out of scope (before what the hook uses).
class SnapshotHook {
public:
    SnapshotHook(SignalWatcher& watcher, std::function<void()> hook) : watcher_(watcher) {
        watcher_.set_snapshot(std::move(hook));
    }
    SnapshotHook(const SnapshotHook&) = delete;
    SnapshotHook& operator=(const SnapshotHook&) = delete;
    ~SnapshotHook() { remove(); }
    /// Removes the hook now, waiting for a run in progress.
    void remove() { watcher_.set_snapshot(nullptr); }

private:
    SignalWatcher& watcher_;
};

/// Writes text to path through path.tmp and a rename, so a reader never sees half of it.
/// Returns 0 or an errno.
int write_atomically(const std::string& path, const std::string& text) {
    std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    bool ok = f != nullptr && std::fwrite(text.data(), 1, text.size(), f) == text.size();
    int err = errno;
    if (f != nullptr && std::fclose(f) != 0) {
        ok = false;
        err = errno;
    }
    if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        ::unlink(tmp.c_str());
        return err != 0 ? err : EIO;
    }
    return 0;
}

/// Writes the statistics document to path (--stats-json, or the runtime directory's).
bool write_stats(const std::string& path, const Launch& launch, const Transport& transport) {
    const DeviceStats* stats = transport.stats();
    if (stats == nullptr) {
        return true;
    }
    std::string doc = stats_document(*stats, transport.info(), launch.transport->name,
                                     launch.backend != nullptr ? launch.backend->name : "-");
    if (int err = write_atomically(path, doc); err != 0) {
        log_error("cannot write statistics to %s: %s", path.c_str(), std::strerror(err));
        return false;
    }
    return true;
}

/// Writes the serving process's pid to path (for the harness's CPU accounting); removes it when
/// destroyed.
class PidFile {
public:
    explicit PidFile(std::string path) : path_(std::move(path)) {
        if (path_.empty()) {
            return;
        }
        std::FILE* f = std::fopen(path_.c_str(), "w");
        bool ok = f != nullptr && std::fprintf(f, "%d\n", static_cast<int>(::getpid())) > 0;
        if (f != nullptr && std::fclose(f) != 0) {
            ok = false;
        }
        if (!ok) {
            log_error("cannot write the pid file %s: %s", path_.c_str(), std::strerror(errno));
            path_.clear();
        }
    }
    PidFile(const PidFile&) = delete;
    PidFile& operator=(const PidFile&) = delete;
    ~PidFile() {
        if (!path_.empty()) {
            ::unlink(path_.c_str());
        }
    }

private:
    std::string path_;
};

/// This daemon's entry in the runtime directory while it serves: <id>.pid, and <id>.stats.json
/// written on SIGUSR1. Removed when the daemon stops serving; a daemon that is killed leaves it,
/// and `userblk stats` then finds the recorded process gone and calls the entry stale.
class RuntimeRecord {
public:
    RuntimeRecord() = default;
    RuntimeRecord(const RuntimeRecord&) = delete;
    RuntimeRecord& operator=(const RuntimeRecord&) = delete;
    ~RuntimeRecord() { remove(); }

    /// Records this process as the server of the device named name (entry_name()). A failure
    /// is logged, not fatal: only `userblk stats` needs the record.
    void publish(const std::string& name) {
        std::lock_guard lock(mutex_);
        std::string dir = directory();
        auto start = process_start_time(::getpid());
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
            log_error("cannot create %s: %s; `userblk stats` will not find this daemon",
                      dir.c_str(), std::strerror(errno));
            return;
        }
        std::string record =
            std::to_string(::getpid()) + " " + std::to_string(start.value_or(0)) + "\n";
        std::string pid_file = pid_path(name);
        ::unlink(stats_path(name).c_str()); // a killed predecessor's
        if (int err = write_atomically(pid_file, record); err != 0) {
            log_error("cannot write %s: %s; `userblk stats` will not find this daemon",
                      pid_file.c_str(), std::strerror(err));
            return;
        }
        pid_path_ = std::move(pid_file);
        stats_path_ = stats_path(name);
        record_ = std::move(record);
    }

    /// Runs write(path of <id>.stats.json) unless the record is not (or no longer) published.
    void with_stats_path(const std::function<void(const std::string&)>& write) {
        std::lock_guard lock(mutex_);
        if (!stats_path_.empty()) {
            write(stats_path_);
        }
    }

    /// Removes the entry, unless another daemon has taken the id over since.
    void remove() {
        std::lock_guard lock(mutex_);
        if (pid_path_.empty()) {
            return;
        }
        std::string now;
        if (std::FILE* f = std::fopen(pid_path_.c_str(), "r"); f != nullptr) {
            char buf[64];
            now.assign(buf, std::fread(buf, 1, sizeof(buf), f));
            std::fclose(f);
        }
        if (now == record_) {
            ::unlink(stats_path_.c_str());
            ::unlink(pid_path_.c_str());
        }
        pid_path_.clear();
        stats_path_.clear();
    }

private:
    std::mutex mutex_;
    std::string pid_path_;
    std::string stats_path_;
    std::string record_;
};

/// Creates the device, serves it until a signal or its deletion, then deletes it. Exit code.
int serve_device(const Launch& launch, Reporter& reporter) {
    SignalWatcher watcher; // first: every thread after it has the signals blocked
    PidFile pid_file(launch.pid_path);
    RuntimeRecord runtime; // before the snapshot hook that uses it

    std::unique_ptr<Backend> backend;
    if (launch.backend != nullptr) {
        BackendConfig bcfg;
        bcfg.size = launch.cfg.size;
        bcfg.block_size = launch.cfg.block_size;
        bcfg.nr_queues = launch.cfg.nr_queues;
        bcfg.max_io_bytes = launch.cfg.max_io_bytes;
        bcfg.options = launch.backend_options;
        auto made = launch.backend->make(bcfg);
        if (!made.ok()) {
            reporter.failed(made.status().message());
            return kExitFailure;
        }
        backend = std::move(made).value();
    }
    DeviceConfig cfg = launch.cfg;
    cfg.features = launch.features.value_or(0);
    if (backend != nullptr) {
        BackendServes serves = backend->serves();
        if (!launch.features) {
            cfg.features = default_features(serves);
        } else if (Status st = check_features(*launch.features, serves, launch.backend->name);
                   !st.ok()) {
            reporter.failed(st.message());
            return kExitUsage;
        }
    }
    if (launch.lend) {
        cfg.features |= USERBLK_F_LEND;
    }
    if (launch.recovery) {
        cfg.features |= USERBLK_F_RECOVERY;
    }
    std::unique_ptr<Transport> transport = launch.transport->make();
    if (Status st = transport->create(cfg, backend.get()); !st.ok()) {
        reporter.failed(st.message());
        return kExitFailure;
    }
    SnapshotHook snapshots(watcher, [&] {
        // For `userblk stats` (the runtime directory) and for --stats-json.
        runtime.with_stats_path(
            [&](const std::string& path) { write_stats(path, launch, *transport); });
        if (!launch.stats_path.empty()) {
            write_stats(launch.stats_path, launch, *transport);
        }
    });
    bool ready = false;
    Status served = transport->serve(watcher.token(), [&](const DeviceInfo& info) {
        ready = true;
        if (transport->stats() != nullptr) { // a daemon with statistics (not a reference)
            runtime.publish(entry_name(launch.transport, info.id));
        }
        reporter.ready(info);
    });
    runtime.remove(); // while the device, and so its id, is still ours
    Status removed = transport->destroy();

    int code = kExitOk;
    if (!served.ok()) {
        reporter.failed(served.message());
        code = kExitFailure;
    } else if (!ready) {
        reporter.failed("stopped by a signal before the device was ready");
        code = kExitFailure;
    }
    if (!removed.ok()) {
        log_error("%s", removed.message().c_str());
        code = kExitFailure;
    }
    snapshots.remove(); // the last statistics are the final ones, written once
    if (!launch.stats_path.empty() && !write_stats(launch.stats_path, launch, *transport)) {
        code = kExitFailure;
    }
    return code;
}

/// The parent's side of --daemon: waits for the child's "OK"/"ERR" line.
int wait_for_daemon(pid_t child, unique_fd pipe) {
    std::string line;
    char buf[512];
    while (line.find('\n') == std::string::npos) {
        ssize_t n = ::read(pipe.get(), buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        line.append(buf, static_cast<std::size_t>(n));
    }
    if (auto nl = line.find('\n'); nl != std::string::npos) {
        line.resize(nl);
    }
    if (line.starts_with("OK ")) {
        std::printf("%s\n", line.c_str() + 3);
        std::fflush(stdout);
        return kExitOk;
    }
    int status = 0;
    pid_t r;
    do {
        r = ::waitpid(child, &status, 0);
    } while (r < 0 && errno == EINTR);
    if (line.starts_with("ERR ")) {
        return fail(kExitFailure, line.substr(4));
    }
    std::string how = "for an unknown reason";
    if (r == child && WIFEXITED(status)) {
        how = "with status " + std::to_string(WEXITSTATUS(status));
    } else if (r == child && WIFSIGNALED(status)) {
        how = std::string("by signal ") + strsignal(WTERMSIG(status));
    }
    return fail(kExitFailure, "the daemon ended " + how + " before the device was ready");
}

} // namespace

int serve_in_foreground(const Launch& launch) {
    TerminalReporter reporter;
    return serve_device(launch, reporter);
}

int daemonize(const Launch& launch) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) < 0) {
        return fail(kExitFailure,
                    std::string("cannot create the daemon's pipe: ") + std::strerror(errno));
    }
    unique_fd read_end(fds[0]);
    unique_fd write_end(fds[1]);
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) {
        return fail(kExitFailure, std::string("cannot fork the daemon: ") + std::strerror(errno));
    }
    if (pid > 0) {
        write_end.reset();
        return wait_for_daemon(pid, std::move(read_end));
    }
    // The daemon: its own session, no terminal on stdin/stdout; stderr until it is ready.
    read_end.reset();
    ::setsid();
    if (::chdir("/") != 0) {
        log_error("cannot change to /: %s", std::strerror(errno));
    }
    DaemonReporter::redirect_to_null(STDIN_FILENO);
    DaemonReporter::redirect_to_null(STDOUT_FILENO);
    DaemonReporter reporter(std::move(write_end), launch.log_path);
    return serve_device(launch, reporter);
}

} // namespace userblk::runtime
