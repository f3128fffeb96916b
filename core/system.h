// Small helpers for code that sets up kernel devices (the references, the nbd and ublk
// baselines): run a command, write a sysfs attribute, wait for a device node.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "status.h"

namespace userblk {

/// Runs argv (looked up in PATH) and waits; a failure names the command and its exit.
Status run_command(const std::vector<std::string>& argv);

/// Writes value into the sysfs/configfs attribute path.
Status write_attribute(const std::string& path, std::string_view value);

/// Waits up to timeout_ms for path to exist (device nodes appear asynchronously).
Status wait_for_path(const std::string& path, unsigned timeout_ms);

} // namespace userblk
