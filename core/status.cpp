#include "status.h"

namespace userblk {

Status Status::from_errno(int err, std::string_view what, std::string_view why) {
    if (err <= 0) {
        err = EIO;
    }
    std::error_code code(err, std::generic_category());
    std::string message(what);
    message += ": ";
    message += code.message();
    if (!why.empty()) {
        message += " (";
        message += why;
        message += ')';
    }
    return {code, std::move(message)};
}

} // namespace userblk
