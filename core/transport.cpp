#include "transport.h"

namespace userblk {

DeviceInfo Transport::info() const {
    return {};
}

const DeviceStats* Transport::stats() const {
    return nullptr;
}

std::string_view kind_name(TransportKind kind) noexcept {
    switch (kind) {
    case TransportKind::userblk:
        return "userblk";
    case TransportKind::baseline:
        return "baseline";
    case TransportKind::reference:
        return "reference";
    }
    return "unknown";
}

} // namespace userblk
