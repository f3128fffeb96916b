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

std::string_view backend_use_name(BackendUse use) noexcept {
    switch (use) {
    case BackendUse::object:
        return "object";
    case BackendUse::none:
        return "none";
    case BackendUse::own:
        return "own";
    }
    return "unknown";
}

} // namespace userblk
