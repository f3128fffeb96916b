#include "reference.h"

#include <condition_variable>
#include <mutex>

#include "core/capabilities.h"

namespace userblk::reference {

void KernelReference::describe(Capabilities& caps) const {
    caps.set("backend", "none: the kernel serves the device itself");
    caps.set("daemon", "none: no user space on the I/O path");
    describe_device(caps);
}

Status KernelReference::serve(std::stop_token stop, const ReadyFn& ready) {
    ready(info_);
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait(lock, stop, [] { return false; });
    return {};
}

} // namespace userblk::reference
