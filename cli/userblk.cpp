// userblk: create, list and delete userblk devices, and serve them (the daemon).
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "core/config.h"
#include "core/fault.h"
#include "transports/kmod/kmod.h"
#include "core/log.h"
#include "registry.h"
#include "core/size.h"
#include "core/unique_fd.h"

namespace {

using namespace userblk;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
/// --poll-us beyond a second is a typo, not a polling budget.
constexpr std::uint32_t kMaxPollUs = 1000000;

/// Prints "userblk: <message>" on stderr and returns code.
int fail(int code, const std::string& message) {
    log_error("%s", message.c_str());
    return code;
}

// ---------------------------------------------------------------------------------------------
// add

struct AddOptions {
    std::string transport;
    std::string backend;
    std::string size;
    std::uint32_t queues = 1;
    std::uint32_t depth = 64;
    std::string block_size = "512";
    std::string max_io = "0";
    std::uint32_t timeout_ms = 0;
    std::string features;
    std::optional<std::uint32_t> id;
    std::string poll_us = "0";
    std::string socket = "unix";
    bool daemon = false;
    std::string stats_json;
    std::string pid_file;
    std::string log_file = "/dev/null";
    std::string fault;
    std::optional<std::uint64_t> fault_seed;
    double fault_rate = FaultConfig{}.rate;
    std::uint32_t fault_skip = FaultConfig{}.skip;
};

/// What `add` was asked to run, checked.
struct Launch {
    const TransportEntry* transport = nullptr;
    const BackendEntry* backend = nullptr;
    decltype(BackendConfig::options) backend_options; ///< from --backend NAME:KEY=VALUE,...
    DeviceConfig cfg;
    std::string stats_path; ///< absolute, or empty
    std::string pid_path;   ///< absolute, or empty
    std::string log_path;   ///< absolute (daemon only)
};

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

// ---------------------------------------------------------------------------------------------
// The runtime directory: which process serves which device, for `userblk stats`

/// Where serving daemons record themselves: $USERBLK_RUNTIME_DIR, else /run/userblk.
std::string runtime_dir() {
    const char* env = std::getenv("USERBLK_RUNTIME_DIR");
    return env != nullptr && *env != '\0' ? std::string(env) : std::string("/run/userblk");
}

/// The name of device id's entries: "<id>" for a userblk.ko device, "<transport>-<id>" for a
/// transport with ids of its own (ublk).
std::string runtime_name(const TransportEntry* transport, std::uint32_t id) {
    if (transport != nullptr && transport->remove != nullptr) {
        return std::string(transport->name) + "-" + std::to_string(id);
    }
    return std::to_string(id);
}

/// <dir>/<name>.pid: "<pid> <start time>\n" of the daemon serving the device.
std::string runtime_pid_path(const std::string& name) {
    return runtime_dir() + "/" + name + ".pid";
}

/// <dir>/<name>.stats.json: the statistics that daemon writes on SIGUSR1.
std::string runtime_stats_path(const std::string& name) {
    return runtime_dir() + "/" + name + ".stats.json";
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

/// This daemon's entry in the runtime directory while it serves: <id>.pid, and <id>.stats.json
/// written on SIGUSR1. Removed when the daemon stops serving; a daemon that is killed leaves it,
/// and `userblk stats` then finds the recorded process gone and calls the entry stale.
class RuntimeRecord {
public:
    RuntimeRecord() = default;
    RuntimeRecord(const RuntimeRecord&) = delete;
    RuntimeRecord& operator=(const RuntimeRecord&) = delete;
    ~RuntimeRecord() { remove(); }

    /// Records this process as the server of the device named name (runtime_name()). A failure
    /// is logged, not fatal: only `userblk stats` needs the record.
    void publish(const std::string& name) {
        std::lock_guard lock(mutex_);
        std::string dir = runtime_dir();
        auto start = process_start_time(::getpid());
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
            log_error("cannot create %s: %s; `userblk stats` will not find this daemon",
                      dir.c_str(), std::strerror(errno));
            return;
        }
        std::string record =
            std::to_string(::getpid()) + " " + std::to_string(start.value_or(0)) + "\n";
        std::string pid_path = runtime_pid_path(name);
        ::unlink(runtime_stats_path(name).c_str()); // a killed predecessor's
        if (int err = write_atomically(pid_path, record); err != 0) {
            log_error("cannot write %s: %s; `userblk stats` will not find this daemon",
                      pid_path.c_str(), std::strerror(err));
            return;
        }
        pid_path_ = std::move(pid_path);
        stats_path_ = runtime_stats_path(name);
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
    std::unique_ptr<Transport> transport = launch.transport->make();
    if (Status st = transport->create(launch.cfg, backend.get()); !st.ok()) {
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
            runtime.publish(runtime_name(launch.transport, info.id));
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

std::optional<std::uint32_t> parse_u32_size(const std::string& text) {
    auto v = parse_size(text);
    if (!v || *v > UINT32_MAX) {
        return std::nullopt;
    }
    return static_cast<std::uint32_t>(*v);
}

/// A --poll-us value: decimal digits, at most kMaxPollUs.
std::optional<std::uint32_t> parse_poll_us(const std::string& text) {
    std::uint32_t v = 0;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec != std::errc() || ptr != end || v > kMaxPollUs) {
        return std::nullopt;
    }
    return v;
}

int cmd_add(const AddOptions& o) {
    Launch launch;
    launch.transport = find_transport(o.transport);
    if (launch.transport == nullptr) {
        return fail(kExitUsage, "unknown transport '" + o.transport +
                                    "'; valid transports: " + transport_names());
    }
    std::unique_ptr<Transport> probe = launch.transport->make();
    bool needs_backend = probe->needs_backend();
    std::span<const std::string_view> own = probe->own_backends();
    if (!own.empty()) {
        // It serves the backend by name with a server of its own (nbdkit): no Backend object.
        std::string names;
        for (std::string_view n : own) {
            names += (names.empty() ? "" : ", ") + std::string(n);
        }
        std::string why;
        auto spec = parse_backend_spec(o.backend, &why);
        if (!spec || !spec->options.empty() ||
            std::find(own.begin(), own.end(), spec->name) == own.end()) {
            return fail(kExitUsage, "--backend: " + std::string(launch.transport->name) +
                                        " serves the backends " + names +
                                        " itself, without options" +
                                        (o.backend.empty() ? "" : ", not '" + o.backend + "'"));
        }
        launch.cfg.backend = spec->name;
    } else if (!needs_backend) {
        if (!o.backend.empty() && o.backend != "-") {
            return fail(kExitUsage, std::string(launch.transport->name) +
                                        " is served by the kernel alone: it takes no --backend");
        }
    } else if (o.backend.empty()) {
        return fail(kExitUsage, "--backend is required for " + std::string(launch.transport->name) +
                                    "; valid backends: " + backend_names());
    } else {
        std::string why;
        auto spec = parse_backend_spec(o.backend, &why);
        if (!spec) {
            return fail(kExitUsage, "invalid --backend '" + o.backend + "': " + why);
        }
        launch.backend = find_backend(spec->name);
        if (launch.backend == nullptr) {
            return fail(kExitUsage,
                        "unknown backend '" + spec->name + "'; valid backends: " + backend_names());
        }
        if (Status st = check_backend_options(*launch.backend, spec->options); !st.ok()) {
            return fail(kExitUsage, st.message());
        }
        launch.backend_options = std::move(spec->options);
        launch.cfg.backend = spec->name;
    }
    auto poll_us = parse_poll_us(o.poll_us);
    if (!poll_us) {
        return fail(kExitUsage, "invalid --poll-us '" + o.poll_us +
                                    "': expected a whole number of microseconds from 0 to " +
                                    std::to_string(kMaxPollUs));
    }
    if (*poll_us != 0 && !transport_polls(*launch.transport)) {
        return fail(kExitUsage, "--poll-us: the " + std::string(launch.transport->name) +
                                    " transport does not poll; transports that poll: " +
                                    polling_transport_names());
    }
    auto socket = parse_socket_kind(o.socket);
    if (!socket) {
        return fail(kExitUsage, "invalid --socket '" + o.socket + "': expected unix or tcp");
    }
    if (*socket != SocketKind::unix_stream &&
        describe_transport(*launch.transport).get("sockets").value_or("").find(o.socket) ==
            std::string::npos) {
        std::string with;
        for (const auto& t : transports()) {
            if (describe_transport(t).get("sockets").value_or("").find(o.socket) !=
                std::string::npos) {
                with += (with.empty() ? "" : ", ") + std::string(t.name);
            }
        }
        return fail(kExitUsage, "--socket " + o.socket + ": the " +
                                    std::string(launch.transport->name) +
                                    " transport has no socket to a server; transports with one: " +
                                    (with.empty() ? "none" : with));
    }
    if (!o.fault.empty()) {
        std::string bad_fault;
        auto kinds = parse_faults(o.fault, &bad_fault);
        if (!kinds) {
            return fail(kExitUsage, "unknown fault '" + bad_fault + "'; valid faults: " +
                                        format_faults((FaultMask{1} << kFaultKinds) - 1));
        }
        std::string offered = describe_transport(*launch.transport).get("faults").value_or("");
        auto can = parse_faults(offered);
        if (offered.empty() || !can || (*kinds & ~*can) != 0) {
            std::string with;
            for (const auto& t : transports()) {
                if (auto f = describe_transport(t).get("faults")) {
                    with += (with.empty() ? "" : "; ") + std::string(t.name) + ": " + *f;
                }
            }
            return fail(kExitUsage,
                        "--fault " + format_faults(*kinds & ~can.value_or(0)) + ": the " +
                            std::string(launch.transport->name) + " transport cannot inject " +
                            (offered.empty() ? "faults" : "it (it offers " + offered + ")") +
                            "; transports with faults: " + with);
        }
        if (!o.fault_seed) {
            return fail(kExitUsage, "--fault needs --fault-seed N, so that the run can be "
                                    "reproduced");
        }
        if (!(o.fault_rate > 0 && o.fault_rate <= 1)) {
            return fail(kExitUsage, "invalid --fault-rate: expected a share of completions "
                                    "greater than 0 and at most 1");
        }
        launch.cfg.fault.kinds = *kinds;
        launch.cfg.fault.seed = *o.fault_seed;
        launch.cfg.fault.rate = o.fault_rate;
        launch.cfg.fault.skip = o.fault_skip;
    } else if (o.fault_seed) {
        return fail(kExitUsage, "--fault-seed without --fault: name the faults to inject");
    }
    const char* kSizeHelp = "expected a number of bytes with an optional K, M, G or T suffix";
    auto size = parse_size(o.size);
    if (!size) {
        return fail(kExitUsage, "invalid --size '" + o.size + "': " + kSizeHelp);
    }
    auto block_size = parse_u32_size(o.block_size);
    if (!block_size) {
        return fail(kExitUsage, "invalid --block-size '" + o.block_size + "': " + kSizeHelp);
    }
    auto max_io = parse_u32_size(o.max_io);
    if (!max_io) {
        return fail(kExitUsage, "invalid --max-io '" + o.max_io + "': " + kSizeHelp);
    }
    std::string bad;
    auto features = parse_features(o.features, &bad);
    if (!features) {
        return fail(kExitUsage, "unknown feature '" + bad +
                                    "'; valid features: " + std::string(feature_names()));
    }
    launch.cfg.size = *size;
    launch.cfg.block_size = *block_size;
    launch.cfg.nr_queues = o.queues;
    launch.cfg.queue_depth = o.depth;
    launch.cfg.max_io_bytes = *max_io;
    launch.cfg.timeout_ms = o.timeout_ms;
    launch.cfg.features = *features;
    launch.cfg.dev_id = o.id.value_or(USERBLK_DEV_ID_ANY);
    launch.cfg.poll_us = *poll_us;
    launch.cfg.socket = *socket;
    // The daemon changes to /: make paths absolute first.
    std::error_code ec;
    if (!o.stats_json.empty()) {
        launch.stats_path = std::filesystem::absolute(o.stats_json, ec).string();
    }
    if (!o.pid_file.empty()) {
        launch.pid_path = std::filesystem::absolute(o.pid_file, ec).string();
    }
    launch.log_path = std::filesystem::absolute(o.log_file, ec).string();

    if (o.daemon) {
        return daemonize(launch);
    }
    TerminalReporter reporter;
    return serve_device(launch, reporter);
}

// ---------------------------------------------------------------------------------------------
// list, del, and the self-descriptions

int cmd_list() {
    auto control = ControlDevice::open();
    if (!control.ok()) {
        return fail(kExitFailure, control.status().message());
    }
    for (std::uint32_t id = 0; id < USERBLK_MAX_DEVICES; ++id) {
        auto info = control->get_info(id);
        if (!info.ok()) {
            if (info.status().error_number() == ENODEV) {
                continue;
            }
            return fail(kExitFailure, info.status().message());
        }
        const userblk_dev_config& c = info.value();
        const TransportEntry* t = find_transport_by_mode(c.mode);
        std::string mode = t != nullptr ? std::string(t->name) : "mode" + std::to_string(c.mode);
        std::printf("%u %s %s %s %u %u %s\n", id, disk_path(id).c_str(), mode.c_str(),
                    format_size(c.size).c_str(), c.nr_queues, c.queue_depth,
                    state_name(c.state).c_str());
    }
    return kExitOk;
}

int cmd_del(std::uint32_t id, const std::string& transport) {
    if (!transport.empty()) {
        const TransportEntry* t = find_transport(transport);
        if (t == nullptr) {
            return fail(kExitUsage, "unknown transport '" + transport +
                                        "'; valid transports: " + transport_names());
        }
        if (t->remove != nullptr) { // its devices are not userblk.ko's (ublk)
            if (Status st = t->remove(id); !st.ok()) {
                return fail(kExitFailure, st.message());
            }
            return kExitOk;
        }
    }
    auto control = ControlDevice::open();
    if (!control.ok()) {
        return fail(kExitFailure, control.status().message());
    }
    // An administrator's command: the device is usually another process's (a daemon's).
    if (Status st = control->del_dev(id, /*force=*/true); !st.ok()) {
        return fail(kExitFailure, st.message());
    }
    return kExitOk;
}

/// One version of a file (inode and mtime): each document written and renamed is a new one.
struct FileVersion {
    bool exists = false;
    ino_t ino = 0;
    timespec mtime{};
    bool operator==(const FileVersion& o) const {
        return exists == o.exists && ino == o.ino && mtime.tv_sec == o.mtime.tv_sec &&
               mtime.tv_nsec == o.mtime.tv_nsec;
    }
};

FileVersion file_version(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return {};
    }
    return {true, st.st_ino, st.st_mtim};
}

/// `userblk stats ID`: asks the daemon serving ID for its statistics (SIGUSR1) and prints the
/// document it writes into the runtime directory.
int cmd_stats(std::uint32_t id, const std::string& transport, double timeout_s) {
    const TransportEntry* t = nullptr;
    if (!transport.empty() && (t = find_transport(transport)) == nullptr) {
        return fail(kExitUsage, "unknown transport '" + transport +
                                    "'; valid transports: " + transport_names());
    }
    const std::string name = runtime_name(t, id);
    const std::string dev =
        (t != nullptr && t->remove != nullptr ? transport + " device " : std::string("device ")) +
        std::to_string(id);
    std::string pid_path = runtime_pid_path(name);
    std::FILE* f = std::fopen(pid_path.c_str(), "r");
    if (f == nullptr) {
        if (errno == ENOENT) {
            return fail(kExitFailure, "no daemon serves " + dev + ": " + pid_path +
                                          " does not exist (`userblk add` records itself there "
                                          "while it serves; `userblk list` shows the devices)");
        }
        return fail(kExitFailure, "cannot read " + pid_path + ": " + std::strerror(errno));
    }
    long long pid = 0;
    unsigned long long start = 0;
    int fields = std::fscanf(f, "%lld %llu", &pid, &start);
    std::fclose(f);
    if (fields != 2 || pid <= 0 || pid > INT32_MAX) {
        return fail(kExitFailure, pid_path + " is not a userblk daemon's record (\"<pid> <start "
                                             "time>\"): remove it");
    }
    auto daemon = static_cast<pid_t>(pid);
    const std::string who = "the daemon of " + dev + " (pid " + std::to_string(pid) + ")";
    if (process_start_time(daemon) != start) {
        return fail(kExitFailure, "stale " + pid_path + ": " + who +
                                      " is gone (killed?); the device may be dead: `userblk "
                                      "list`, `userblk del " +
                                      std::to_string(id) + "`");
    }
    std::string stats_path = runtime_stats_path(name);
    FileVersion before = file_version(stats_path);
    if (::kill(daemon, SIGUSR1) != 0) {
        return fail(kExitFailure,
                    "cannot signal " + who + ": " + std::strerror(errno) + " (run as root?)");
    }
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(timeout_s));
    while (true) {
        FileVersion now = file_version(stats_path);
        if (now.exists && !(now == before)) {
            break;
        }
        if (process_start_time(daemon) != start) {
            return fail(kExitFailure, who + " exited before it wrote its statistics");
        }
        if (std::chrono::steady_clock::now() > deadline) {
            char secs[32];
            std::snprintf(secs, sizeof(secs), "%g", timeout_s);
            return fail(kExitFailure, who + " wrote no statistics to " + stats_path + " within " +
                                          secs + " s of SIGUSR1");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    f = std::fopen(stats_path.c_str(), "r");
    if (f == nullptr) { // the daemon exited and removed it in between
        return fail(kExitFailure, "cannot read " + stats_path + ": " + std::strerror(errno));
    }
    char buf[8192];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof(buf), f)) > 0;) {
        std::fwrite(buf, 1, n, stdout);
    }
    std::fclose(f);
    return std::fflush(stdout) == 0 ? kExitOk : kExitFailure;
}

int dump_transport(const std::string& name) {
    const TransportEntry* t = find_transport(name);
    if (t == nullptr) {
        return fail(kExitUsage,
                    "unknown transport '" + name + "'; valid transports: " + transport_names());
    }
    std::fputs(describe_transport(*t).to_string().c_str(), stdout);
    return kExitOk;
}

int dump_backend(const std::string& name) {
    const BackendEntry* b = find_backend(name);
    if (b == nullptr) {
        return fail(kExitUsage,
                    "unknown backend '" + name + "'; valid backends: " + backend_names());
    }
    std::fputs(describe_backend(*b).to_string().c_str(), stdout);
    return kExitOk;
}

int run(int argc, char** argv) {

    CLI::App app{"userblk: block devices served by a user-space daemon through userblk.ko.",
                 "userblk"};
    app.footer("Exit status: 0 success, 1 failure (the message says what and why), 2 usage "
               "error.\nSee `userblk COMMAND --help`.");
    bool list_transports = false;
    bool list_backends = false;
    std::string dump_transport_name;
    std::string dump_backend_name;
    app.add_flag("--list-transports", list_transports, "Print the transport names, one a line");
    app.add_flag("--list-backends", list_backends, "Print the backend names, one a line");
    app.add_option("--dump-transport", dump_transport_name,
                   "Print a transport's capabilities as key=value lines")
        ->option_text("NAME");
    app.add_option("--dump-backend", dump_backend_name,
                   "Print a backend's capabilities as key=value lines")
        ->option_text("NAME");
    app.require_subcommand(0, 1);

    AddOptions add_opts;
    CLI::App* add = app.add_subcommand(
        "add", "Create a device and serve it in the foreground; print \"<id> <path>\" once it is "
               "served. SIGINT/SIGTERM delete it and exit 0; so does its deletion by `userblk "
               "del`.");
    add->add_option("--transport", add_opts.transport, "Transport (see --list-transports)")
        ->required()
        ->option_text("NAME");
    add->add_option("--backend", add_opts.backend,
                    "Backend (see --list-backends) and its options, e.g. file:path=/tmp/disk.img "
                    "(keys: options= in --dump-backend NAME); required except for the kernel-only "
                    "references null_blk, brd and loop; nbdkit takes ram or null, by name")
        ->option_text("NAME[:KEY=VALUE,...]");
    add->add_option("--size", add_opts.size,
                    "Device size in bytes; K, M, G, T suffixes are "
                    "powers of 1024")
        ->required()
        ->option_text("SIZE");
    add->add_option("--queues", add_opts.queues, "Hardware queues, one serving thread each")
        ->capture_default_str();
    add->add_option("--depth", add_opts.depth, "Requests in flight per queue")
        ->capture_default_str();
    add->add_option("--block-size", add_opts.block_size, "Logical block size, 512..4096")
        ->capture_default_str()
        ->option_text("SIZE");
    add->add_option("--max-io", add_opts.max_io,
                    "Largest request in bytes; 0: the module's "
                    "default")
        ->capture_default_str()
        ->option_text("SIZE");
    add->add_option("--timeout-ms", add_opts.timeout_ms,
                    "Request timeout; 0: the module's "
                    "default")
        ->capture_default_str();
    add->add_option("--features", add_opts.features,
                    "Comma-separated: flush, discard, write-zeroes, read-only")
        ->option_text("LIST");
    add->add_option("--id", add_opts.id, "Wanted device id (default: any free one)")
        ->option_text("N");
    add->add_option("--poll-us", add_opts.poll_us,
                    "Busy-poll: spin up to N microseconds on the queue before sleeping, for "
                    "transports that poll (polling=1 in --dump-transport); 0: never")
        ->capture_default_str()
        ->option_text("N");
    add->add_option("--socket", add_opts.socket,
                    "How the kernel reaches the NBD server, for transports that have one "
                    "(sockets= in --dump-transport: nbd, nbdkit): unix (a UNIX socket) or tcp "
                    "(TCP over 127.0.0.1)")
        ->capture_default_str()
        ->option_text("unix|tcp");
    add->add_flag("--daemon", add_opts.daemon,
                  "Serve in the background: print \"<id> <path>\" and exit 0 once the daemon "
                  "serves the device, or exit 1 with its error");
    add->add_option("--stats-json", add_opts.stats_json,
                    "Write the statistics as JSON to FILE when the daemon exits, and on SIGUSR1 "
                    "(`userblk stats ID` prints them without it)")
        ->option_text("FILE");
    add->add_option("--pid-file", add_opts.pid_file,
                    "Write the serving process's pid to FILE while it serves")
        ->option_text("FILE");
    add->add_option("--log", add_opts.log_file,
                    "With --daemon: append the daemon's messages to FILE once it is ready")
        ->capture_default_str()
        ->option_text("FILE");

    add->add_option("--fault", add_opts.fault,
                    "Fault-injecting mode (docs/faults.md): the daemon lies to the kernel on "
                    "purpose. Comma-separated: drop, double, wrong-tag, short, bad-result, "
                    "stall, exit, scribble, or all; the transport's faults= in "
                    "--dump-transport says which it can inject")
        ->option_text("KIND[,KIND...]");
    add->add_option("--fault-seed", add_opts.fault_seed,
                    "Seed of the fault decisions (required with --fault): the n-th completion "
                    "of a queue gets the same fault in every run of a seed")
        ->option_text("N");
    add->add_option("--fault-rate", add_opts.fault_rate,
                    "Share of completions that get a fault, greater than 0 and at most 1")
        ->capture_default_str()
        ->option_text("P");
    add->add_option("--fault-skip", add_opts.fault_skip,
                    "Completions per queue served faithfully before the first fault (lets the "
                    "kernel's partition scan through)")
        ->capture_default_str()
        ->option_text("N");

    CLI::App* list = app.add_subcommand(
        "list", "List devices, one a line: id path mode size queues depth state");

    std::uint32_t del_id = 0;
    CLI::App* del = app.add_subcommand("del", "Delete a device (its daemon then exits 0)");
    del->add_option("id", del_id, "Device id")->required();
    std::string del_transport;
    del->add_option("--transport", del_transport,
                    "The device's transport, for one whose devices are not userblk.ko's (ublk: "
                    "its own ids and control device); default: a userblk.ko device")
        ->option_text("NAME");

    std::uint32_t stats_id = 0;
    std::string stats_transport;
    double stats_timeout_s = 5;
    CLI::App* stats = app.add_subcommand(
        "stats", "Print the live statistics (JSON, docs/results-schema.md) of the daemon serving "
                 "a device: it is asked with SIGUSR1 and writes them to " +
                     runtime_dir() + "/<id>.stats.json");
    stats->add_option("id", stats_id, "Device id")->required();
    stats
        ->add_option("--transport", stats_transport,
                     "The device's transport, for one whose devices are not userblk.ko's (ublk: "
                     "its own ids; the entries are then <transport>-<id>.*); default: a "
                     "userblk.ko device")
        ->option_text("NAME");
    stats->add_option("--timeout", stats_timeout_s, "Seconds to wait for the daemon's answer")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return kExitUsage;
    }

    if (list_transports) {
        for (const auto& t : transports()) {
            std::printf("%.*s\n", static_cast<int>(t.name.size()), t.name.data());
        }
        return kExitOk;
    }
    if (list_backends) {
        for (const auto& b : backends()) {
            std::printf("%.*s\n", static_cast<int>(b.name.size()), b.name.data());
        }
        return kExitOk;
    }
    if (!dump_transport_name.empty()) {
        return dump_transport(dump_transport_name);
    }
    if (!dump_backend_name.empty()) {
        return dump_backend(dump_backend_name);
    }
    if (*add) {
        return cmd_add(add_opts);
    }
    if (*list) {
        return cmd_list();
    }
    if (*del) {
        return cmd_del(del_id, del_transport);
    }
    if (*stats) {
        return cmd_stats(stats_id, stats_transport, stats_timeout_s);
    }
    std::fputs(app.help().c_str(), stderr);
    return kExitUsage;
}

} // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN); // a daemon's parent that went away is not a reason to die
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        return fail(kExitFailure, std::string("unexpected error: ") + e.what());
    }
}
