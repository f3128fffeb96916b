// The one way this project loads a kernel module (ublk_drv, nbd, null_blk, brd, loop): the
// kernel's own through modprobe, else a module this tree built through finit_module(), then a
// wait for the node the module makes.
#pragma once

#include <string>
#include <vector>

#include "status.h"

namespace userblk {

struct ModuleSpec {
    std::string name;                ///< as /sys/module/<name> and modprobe know it
    std::vector<std::string> params; ///< "key=value", for modprobe and finit_module alike
    /// .ko files built by this tree, tried in order when modprobe fails (e.g. ublk_drv on a
    /// kernel without CONFIG_BLK_DEV_UBLK).
    std::vector<std::string> built;
    /// A path the loaded module makes (a control device, /dev/nbd0), waited for; "" for none.
    std::string ready_path;
    /// What to do when nothing could be loaded (appended to the error).
    std::string hint;
};

/// Loads spec unless /sys/module/<name> exists, then waits up to 5 s for spec.ready_path.
/// *how, if given, says what happened: "present", "modprobe", or the .ko that was inserted.
/// Errors say why (not root, signed modules only, built for another kernel, none found).
Status load_module(const ModuleSpec& spec, std::string* how = nullptr);

/// Whether /sys/module/<name> exists (the module is loaded or built in).
bool module_loaded(const std::string& name);

} // namespace userblk
