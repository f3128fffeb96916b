#include "transport.h"

namespace userblk {

DeviceInfo Transport::info() const {
    return {};
}

const DeviceStats* Transport::stats() const {
    return nullptr;
}

} // namespace userblk
