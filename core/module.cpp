// Loading a kernel module (module.h).
#include "module.h"

#include <cerrno>

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "system.h"
#include "unique_fd.h"

namespace userblk {

namespace {

constexpr unsigned kReadyWaitMs = 5000;

bool exists(const std::string& path) {
    return ::access(path.c_str(), F_OK) == 0;
}

/// finit_module() of path with params; 0, or the errno (EEXIST: loaded meanwhile, fine).
int insert(const std::string& path, const std::vector<std::string>& params) {
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        return errno;
    }
    std::string args;
    for (const std::string& p : params) {
        args += (args.empty() ? "" : " ") + p;
    }
    if (::syscall(SYS_finit_module, fd.get(), args.c_str(), 0) != 0) {
        return errno;
    }
    return 0;
}

Status ready(const ModuleSpec& spec) {
    if (spec.ready_path.empty()) {
        return {};
    }
    if (Status st = wait_for_path(spec.ready_path, kReadyWaitMs); !st.ok()) {
        return Status::from_errno(st.error_number(), spec.name + " is loaded", st.message());
    }
    return {};
}

} // namespace

bool module_loaded(const std::string& name) {
    return exists("/sys/module/" + name);
}

Status load_module(const ModuleSpec& spec, std::string* how) {
    auto say = [how](std::string text) {
        if (how != nullptr) {
            *how = std::move(text);
        }
    };
    if (module_loaded(spec.name)) {
        say("present");
        return ready(spec);
    }
    // Quiet only where a built module is the fallback: otherwise modprobe's own words are the
    // error.
    std::vector<std::string> modprobe = {"modprobe"};
    if (!spec.built.empty()) {
        modprobe.emplace_back("-q");
    }
    modprobe.push_back(spec.name);
    modprobe.insert(modprobe.end(), spec.params.begin(), spec.params.end());
    Status probed = run_command(modprobe);
    if (probed.ok()) {
        say("modprobe");
        return ready(spec);
    }
    std::string tried;
    for (const std::string& ko : spec.built) {
        if (!exists(ko)) {
            tried += (tried.empty() ? "" : ", ") + ko + " (missing)";
            continue;
        }
        const int err = insert(ko, spec.params);
        if (err == 0 || err == EEXIST) {
            say(ko);
            return ready(spec);
        }
        std::string why;
        if (err == ENOEXEC) {
            why = "built for another kernel than this one (" + ko + ": vermagic)";
        } else if (err == EPERM) {
            why = "run as root (CAP_SYS_MODULE)";
        } else if (err == EKEYREJECTED || err == EKEYREVOKED) {
            why = "the kernel only loads signed modules (lockdown or module.sig_enforce)";
        }
        return Status::from_errno(err, "cannot load " + spec.name + ": insmod " + ko + " failed",
                                  why);
    }
    std::string why = probed.message();
    if (!spec.built.empty()) {
        why += "; no module built by this tree was found: " +
               (tried.empty() ? std::string("no candidate") : tried);
    }
    if (!spec.hint.empty()) {
        why += "; " + spec.hint;
    }
    return Status::from_errno(probed.error_number() != 0 ? probed.error_number() : ENOENT,
                              "cannot load " + spec.name, why);
}

} // namespace userblk
