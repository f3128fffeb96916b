// userblk: create, list and delete userblk devices; the command line, whose `add` hands a
// checked Launch to the daemon's runtime (daemon.h).
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
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "core/config.h"
#include "core/fault.h"
#include "core/log.h"
#include "core/size.h"
#include "core/unique_fd.h"
#include "daemon.h"
#include "nbd/nbdkit.h"
#include "nbd/sockets.h"
#include "registry.h"
#include "transports/kmod/kmod.h"

namespace {

using namespace userblk;

using runtime::fail;
using runtime::kExitFailure;
using runtime::kExitOk;
using runtime::kExitUsage;
using runtime::Launch;

/// --poll-us beyond a second is a typo, not a polling budget.
constexpr std::uint32_t kMaxPollUs = 1000000;

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
    std::uint32_t recovery_timeout_ms = 0;
    std::string recovery = "off";
    std::optional<std::string> features; ///< nullopt: what the backend serves
    /// `userblk recover ID`: take over this recovering device instead of adding one.
    std::optional<std::uint32_t> recover;
    std::optional<std::uint32_t> id;
    std::string poll_us = "0";
    std::string spin_us = "0";
    std::uint32_t poll_queues = 0;
    std::string lend = "off";
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

/// The paths of the files the daemon writes, absolute (the daemon changes to /).
void set_daemon_paths(const AddOptions& o, Launch& launch) {
    std::error_code ec;
    if (!o.stats_json.empty()) {
        launch.stats_path = std::filesystem::absolute(o.stats_json, ec).string();
    }
    if (!o.pid_file.empty()) {
        launch.pid_path = std::filesystem::absolute(o.pid_file, ec).string();
    }
    launch.log_path = std::filesystem::absolute(o.log_file, ec).string();
}

/// `userblk recover ID`: serve the recovering device ID with the transport and backend asked
/// for, its geometry and features as the device has them (GET_INFO).
int take_over(const AddOptions& o, Launch& launch) {
    const std::uint32_t id = *o.recover;
    if (launch.transport->kind != TransportKind::userblk || launch.transport->mode == 0) {
        return fail(kExitUsage, "recover: " + std::string(launch.transport->name) +
                                    " is not a userblk.ko transport; transports that recover: " +
                                    recovering_transport_names());
    }
    if (!transport_recovers(*launch.transport)) {
        return fail(kExitUsage,
                    "recover: a new daemon cannot take over a device of the " +
                        std::string(launch.transport->name) +
                        " transport; transports that can: " + recovering_transport_names());
    }
    auto control = ControlDevice::open();
    if (!control.ok()) {
        return fail(kExitFailure, control.status().message());
    }
    auto got = control->get_info(id);
    if (!got.ok()) {
        return fail(kExitFailure, got.status().message());
    }
    const userblk_dev_config& c = got.value();
    if (c.state != USERBLK_STATE_RECOVERING) {
        return fail(kExitFailure,
                    "device " + std::to_string(id) + " is " + state_name(c.state) +
                        ", not recovering: a device is taken over after its daemon died or "
                        "handed it over (`userblk handover " +
                        std::to_string(id) +
                        "`), and only if it was added with --features "
                        "recovery");
    }
    if (launch.cfg.nr_poll_queues = c.nr_poll_queues;
        c.nr_poll_queues != 0 && describe_transport(*launch.transport).get("poll_queues") != "1") {
        return fail(kExitUsage, "recover: device " + std::to_string(id) +
                                    " has poll queues, "
                                    "which the " +
                                    std::string(launch.transport->name) + " transport has not");
    }
    launch.cfg.recover = true;
    launch.cfg.dev_id = id;
    launch.cfg.size = c.size;
    launch.cfg.block_size = c.logical_block_size;
    launch.cfg.nr_queues = c.nr_queues;
    launch.cfg.queue_depth = c.queue_depth;
    launch.cfg.max_io_bytes = c.max_io_bytes;
    launch.cfg.timeout_ms = c.timeout_ms;
    launch.cfg.recovery_timeout_ms = c.recovery_timeout_ms;
    launch.cfg.features = c.features;
    launch.features = c.features;
    set_daemon_paths(o, launch);
    return o.daemon ? runtime::daemonize(launch) : runtime::serve_in_foreground(launch);
}

int cmd_add(const AddOptions& o) {
    Launch launch;
    launch.transport = find_transport(o.transport);
    if (launch.transport == nullptr) {
        return fail(kExitUsage, "unknown transport '" + o.transport +
                                    "'; valid transports: " + transport_names());
    }
    const std::span<const std::string_view> own = launch.transport->own_backends;
    if (launch.transport->backends == BackendUse::own) {
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
    } else if (launch.transport->backends == BackendUse::none) {
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
    auto spin_us = parse_poll_us(o.spin_us);
    if (!spin_us) {
        return fail(kExitUsage, "invalid --spin-us '" + o.spin_us +
                                    "': expected a whole number of microseconds from 0 to " +
                                    std::to_string(kMaxPollUs));
    }
    const Capabilities caps = describe_transport(*launch.transport);
    if (*spin_us != 0 && caps.get("spin") != "1") {
        return fail(kExitUsage, "--spin-us: the " + std::string(launch.transport->name) +
                                    " transport has no daemon that spins without system calls "
                                    "(spin=1 in --dump-transport: ring)");
    }
    if (*spin_us != 0 && *poll_us != 0) {
        return fail(kExitUsage, "--spin-us and --poll-us are two ways to poll: choose one");
    }
    if (o.poll_queues != 0 && caps.get("poll_queues") != "1") {
        return fail(kExitUsage, "--poll-queues: the " + std::string(launch.transport->name) +
                                    " transport has no poll queues (poll_queues=1 in "
                                    "--dump-transport: ring)");
    }
    if (o.poll_queues != 0 && o.poll_queues >= o.queues) {
        return fail(kExitUsage, "--poll-queues " + std::to_string(o.poll_queues) + " of --queues " +
                                    std::to_string(o.queues) +
                                    ": at least one queue must take I/O that is not polled");
    }
    if (o.lend != "on" && o.lend != "off") {
        return fail(kExitUsage, "invalid --lend '" + o.lend + "': expected on or off");
    }
    launch.lend = o.lend == "on";
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
    if (o.recover) {
        return take_over(o, launch);
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
    if (o.features) {
        std::string bad;
        auto features = parse_features(*o.features, &bad);
        if (!features) {
            return fail(kExitUsage, "unknown feature '" + bad +
                                        "'; valid features: " + std::string(feature_names()));
        }
        launch.features = *features;
    }
    if (o.recovery != "on" && o.recovery != "off") {
        return fail(kExitUsage, "invalid --recovery '" + o.recovery + "': expected on or off");
    }
    launch.recovery = o.recovery == "on";
    const bool recovery =
        launch.recovery || (launch.features.value_or(0) & USERBLK_F_RECOVERY) != 0;
    if (recovery && !transport_recovers(*launch.transport)) {
        return fail(kExitUsage,
                    "recovery: a new daemon cannot take over a device of the " +
                        std::string(launch.transport->name) +
                        " transport; transports that can: " + recovering_transport_names());
    }
    if (recovery && (launch.lend || (launch.features.value_or(0) & USERBLK_F_LEND) != 0)) {
        return fail(kExitUsage, "recovery and lend exclude each other: a new daemon could not "
                                "know which lent pages a pipe still holds");
    }
    if (o.recovery_timeout_ms != 0 && !recovery) {
        return fail(kExitUsage, "--recovery-timeout-ms needs --recovery on (or --features "
                                "with recovery)");
    }
    if ((launch.lend || (launch.features.value_or(0) & USERBLK_F_LEND) != 0) &&
        !transport_lends(*launch.transport)) {
        return fail(kExitUsage, "lend: the " + std::string(launch.transport->name) +
                                    " transport cannot lend pages; transports that can: " +
                                    lending_transport_names());
    }
    launch.cfg.size = *size;
    launch.cfg.block_size = *block_size;
    launch.cfg.nr_queues = o.queues;
    launch.cfg.queue_depth = o.depth;
    launch.cfg.max_io_bytes = *max_io;
    launch.cfg.timeout_ms = o.timeout_ms;
    launch.cfg.recovery_timeout_ms = o.recovery_timeout_ms;
    launch.cfg.dev_id = o.id.value_or(USERBLK_DEV_ID_ANY);
    launch.cfg.poll_us = *poll_us;
    launch.cfg.spin_us = *spin_us;
    launch.cfg.nr_poll_queues = o.poll_queues;
    launch.cfg.socket = *socket;
    set_daemon_paths(o, launch);
    return o.daemon ? runtime::daemonize(launch) : runtime::serve_in_foreground(launch);
}

// ---------------------------------------------------------------------------------------------
// list, del, and the self-descriptions

int cmd_handover(std::uint32_t id, double wait_s) {
    auto control = ControlDevice::open();
    if (!control.ok()) {
        return fail(kExitFailure, control.status().message());
    }
    // Another process's device (its daemon's): an administrator's tool acts with force.
    if (Status st = control->handover_dev(id, /*force=*/true); !st.ok()) {
        return fail(kExitFailure, st.message());
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_s);
    while (true) {
        auto info = control->get_info(id);
        if (!info.ok()) {
            return fail(kExitFailure, info.status().message());
        }
        if (info->nr_queues_open == 0) {
            return kExitOk;
        }
        if (info->state == USERBLK_STATE_DEAD) {
            return fail(kExitFailure, "device " + std::to_string(id) +
                                          " died while its daemon let go (a request timed out)");
        }
        if (std::chrono::steady_clock::now() >= until) {
            return fail(kExitFailure, "device " + std::to_string(id) +
                                          " is recovering, but its daemon still "
                                          "has " +
                                          std::to_string(info->nr_queues_open) +
                                          " queues open after " +
                                          std::to_string(static_cast<long>(wait_s)) +
                                          " s: is it stuck? `userblk recover` waits for them");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

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

/// `userblk nbdkit -- PLUGIN ARGS...`: Debian's nbdkit serving on a fresh port of 127.0.0.1,
/// started by the project's one launcher (nbd/nbdkit.h). Prints "127.0.0.1:PORT PID" (PID:
/// nbdkit's, whose CPU the harness accounts) on stdout as
/// soon as the port accepts connections (before nbdkit has even run: socket activation), then
/// waits: exits with nbdkit (0 if it exited 0), or stops it on SIGTERM or SIGINT and exits 0.
/// Dies with its parent, and nbdkit with it. The harness's server for the forward backend.
int cmd_nbdkit(const std::vector<std::string>& args) {
    sigset_t waited;
    sigemptyset(&waited);
    sigaddset(&waited, SIGTERM);
    sigaddset(&waited, SIGINT);
    sigaddset(&waited, SIGCHLD);
    // Blocked before nbdkit starts, so that no signal is lost; the child unblocks them.
    if (::pthread_sigmask(SIG_BLOCK, &waited, nullptr) != 0 ||
        ::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
        return fail(kExitFailure,
                    std::string("nbdkit: cannot set up signals: ") + std::strerror(errno));
    }
    auto listener = nbd::Listener::make(SocketKind::tcp_loopback, "nbdkit");
    if (!listener.ok()) {
        return fail(kExitFailure, listener.status().message());
    }
    const std::string address = listener->address();
    std::vector<std::string> argv = {"nbdkit", "--exit-with-parent"};
    argv.insert(argv.end(), args.begin(), args.end());
    nbd::NbdkitProcess server;
    if (Status st = server.start(argv, std::move(listener->fd)); !st.ok()) {
        return fail(kExitFailure, st.message());
    }
    std::printf("%s %d\n", address.c_str(), static_cast<int>(server.pid()));
    std::fflush(stdout);
    while (true) {
        siginfo_t info{};
        if (::sigwaitinfo(&waited, &info) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return fail(kExitFailure, std::string("nbdkit: sigwaitinfo: ") + std::strerror(errno));
        }
        if (info.si_signo != SIGCHLD) {
            server.stop();
            return kExitOk;
        }
        if (std::string why = server.ended(); !why.empty()) {
            if (why == "exited with status 0") {
                return kExitOk;
            }
            return fail(kExitFailure, "nbdkit " + why);
        }
    }
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
    const std::string name = runtime::entry_name(t, id);
    const std::string dev =
        (t != nullptr && t->remove != nullptr ? transport + " device " : std::string("device ")) +
        std::to_string(id);
    std::string pid_path = runtime::pid_path(name);
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
    if (runtime::process_start_time(daemon) != start) {
        return fail(kExitFailure, "stale " + pid_path + ": " + who +
                                      " is gone (killed?); the device may be dead: `userblk "
                                      "list`, `userblk del " +
                                      std::to_string(id) + "`");
    }
    std::string stats_path = runtime::stats_path(name);
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
        if (runtime::process_start_time(daemon) != start) {
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
                    "Comma-separated: flush, discard, write-zeroes, read-only, fua, "
                    "any-daemon, lend, recovery, or none (default: what the backend serves)")
        ->option_text("LIST");
    add->add_option("--id", add_opts.id, "Wanted device id (default: any free one)")
        ->option_text("N");
    add->add_option("--poll-us", add_opts.poll_us,
                    "Busy-poll: spin up to N microseconds on the queue before sleeping, for "
                    "transports that poll (polling=1 in --dump-transport); 0: never")
        ->capture_default_str()
        ->option_text("N");
    add->add_option("--spin-us", add_opts.spin_us,
                    "Spin on the submission ring without system calls, sleeping after N "
                    "microseconds idle; the kernel wakes the daemon only then (spin=1 in "
                    "--dump-transport: ring); 0: never")
        ->capture_default_str()
        ->option_text("N");
    add->add_option("--poll-queues", add_opts.poll_queues,
                    "Of --queues, make the last N poll queues, which take only polled I/O "
                    "(io_uring IOPOLL, RWF_HIPRI; fio --hipri) and whose completions the "
                    "submitter reaps (poll_queues=1 in --dump-transport: ring)")
        ->capture_default_str()
        ->option_text("N");
    add->add_option("--lend", add_opts.lend,
                    "on: WRITEs lend their own pages to the pipe instead of a copy (the lend "
                    "feature, added to the others; lend=1 in --dump-transport: pipe, splice)")
        ->capture_default_str()
        ->option_text("on|off");
    add->add_option("--recovery", add_opts.recovery,
                    "on: when the daemon dies or hands the device over, the device holds its "
                    "I/O for a new daemon (`userblk recover ID`) instead of failing it (the "
                    "recovery feature, added to the others; recovery=1 in --dump-transport: "
                    "copy, ring)")
        ->capture_default_str()
        ->option_text("on|off");
    add->add_option("--recovery-timeout-ms", add_opts.recovery_timeout_ms,
                    "With recovery: how long the device waits for a new daemon before it fails "
                    "the I/O it holds; 0: the module's default (30 s)")
        ->capture_default_str()
        ->option_text("MS");
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

    AddOptions rec_opts;
    std::uint32_t rec_id = 0;
    CLI::App* recover = app.add_subcommand(
        "recover", "Serve a recovering device (added with --recovery on; its daemon died or "
                   "handed it over) as its new daemon, in the foreground like add: the I/O it "
                   "held is issued again to this daemon; print \"<id> <path>\" once served");
    recover->add_option("id", rec_id, "Device id")->required();
    recover->add_option("--transport", rec_opts.transport, "The device's transport: copy, ring")
        ->required()
        ->option_text("NAME");
    recover
        ->add_option("--backend", rec_opts.backend,
                     "Backend and its options, as for add: the same store the old daemon served "
                     "(a file, a server), or the data is not the device's")
        ->required()
        ->option_text("NAME[:KEY=VALUE,...]");
    recover->add_option("--poll-us", rec_opts.poll_us, "As for add")
        ->capture_default_str()
        ->option_text("N");
    recover->add_option("--spin-us", rec_opts.spin_us, "As for add")
        ->capture_default_str()
        ->option_text("N");
    recover->add_flag("--daemon", rec_opts.daemon, "As for add");
    recover->add_option("--stats-json", rec_opts.stats_json, "As for add")->option_text("FILE");
    recover->add_option("--pid-file", rec_opts.pid_file, "As for add")->option_text("FILE");
    recover->add_option("--log", rec_opts.log_file, "As for add")
        ->capture_default_str()
        ->option_text("FILE");

    std::uint32_t handover_id = 0;
    double handover_wait_s = 10;
    CLI::App* handover = app.add_subcommand(
        "handover", "Make the daemon of a live device added with --recovery on let it go (a "
                    "planned upgrade): it answers what it has, exits 0 and leaves the device "
                    "recovering, holding new I/O for `userblk recover ID`; returns once the "
                    "old daemon has closed its queues");
    handover->add_option("id", handover_id, "Device id")->required();
    handover->add_option("--wait", handover_wait_s, "Seconds to wait for the old daemon to let go")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);

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
                     runtime::directory() + "/<id>.stats.json");
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

    std::vector<std::string> nbdkit_args;
    CLI::App* nbdkit = app.add_subcommand(
        "nbdkit", "Run Debian's nbdkit on a fresh port of 127.0.0.1 (socket activation); print "
                  "127.0.0.1:PORT and nbdkit's pid once it accepts connections, stop it on "
                  "SIGTERM. The harness's "
                  "NBD server for the forward backend: userblk nbdkit -- memory 1G");
    nbdkit->add_option("args", nbdkit_args, "nbdkit's plugin and its arguments, after --")
        ->required();

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
    if (*recover) {
        rec_opts.recover = rec_id;
        return cmd_add(rec_opts);
    }
    if (*handover) {
        return cmd_handover(handover_id, handover_wait_s);
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
    if (*nbdkit) {
        return cmd_nbdkit(nbdkit_args);
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
