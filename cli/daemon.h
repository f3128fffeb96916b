// The daemon's runtime: what `userblk add` runs once its command line is checked. It serves one
// device (a Transport on a Backend, both from the registry) until SIGINT, SIGTERM or SIGHUP, or
// until the device is deleted, then removes it; in the foreground, printing "<id> <path>" when
// the device is ready, or as a daemon (--daemon: the parent returns once the child is ready or
// has failed). While it serves it records itself in the runtime directory, where `userblk stats`
// finds it and asks for its statistics (SIGUSR1).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "core/config.h"
#include "registry.h"

namespace userblk::runtime {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

/// Prints "userblk: <message>" on stderr and returns code.
int fail(int code, const std::string& message);

/// What `add` was asked to run, checked.
struct Launch {
    const TransportEntry* transport = nullptr;
    const BackendEntry* backend = nullptr;
    decltype(BackendConfig::options) backend_options; ///< from --backend NAME:KEY=VALUE,...
    DeviceConfig cfg; ///< cfg.features is set from features (below) when the backend is made
    /// --features, checked against what the backend serves; nullopt: exactly what it serves
    /// (default_features()), or none for a transport without a backend object.
    std::optional<std::uint64_t> features;
    bool lend = false;      ///< --lend on: USERBLK_F_LEND beside the features above
    bool recovery = false;  ///< --recovery on: USERBLK_F_RECOVERY beside the features above
    std::string stats_path; ///< absolute, or empty
    std::string pid_path;   ///< absolute, or empty
    std::string log_path;   ///< absolute (daemon only)
};

/// Serves launch in this process. Exit code.
int serve_in_foreground(const Launch& launch);
/// Serves launch in a daemon of its own session; returns once it is ready (printing
/// "<id> <path>") or has failed. Exit code.
int daemonize(const Launch& launch);

/// Where serving daemons record themselves: $USERBLK_RUNTIME_DIR, else /run/userblk.
std::string directory();
/// The name of device id's entries: "<id>" for a userblk.ko device, "<transport>-<id>" for a
/// transport with ids of its own (ublk).
std::string entry_name(const TransportEntry* transport, std::uint32_t id);
/// <dir>/<name>.pid: "<pid> <start time>\n" of the daemon serving the device.
std::string pid_path(const std::string& name);
/// <dir>/<name>.stats.json: the statistics that daemon writes on SIGUSR1.
std::string stats_path(const std::string& name);
/// A process's start time (field 22 of /proc/PID/stat, clock ticks after boot): with the pid it
/// names one process, even after the pid is reused. nullopt if there is no such process.
std::optional<std::uint64_t> process_start_time(pid_t pid);

} // namespace userblk::runtime
