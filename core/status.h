// Errors at the boundaries: an errno with a message naming the object and the cause.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace userblk {

/// The outcome of a setup or teardown step: success, or an errno with a message that names the
/// object and the cause, e.g. "copy: read on queue 1 failed: Bad address". Never thrown.
class [[nodiscard]] Status {
public:
    /// Success.
    Status() = default;

    /// A failure "<what>: <strerror(err)>", followed by " (<why>)" when why is not empty.
    /// err is a positive errno; 0 or a negative value is taken as EIO.
    static Status from_errno(int err, std::string_view what, std::string_view why = {});

    [[nodiscard]] bool ok() const noexcept { return !code_; }
    [[nodiscard]] std::error_code code() const noexcept { return code_; }
    /// The positive errno of a failure, 0 on success.
    [[nodiscard]] int error_number() const noexcept { return code_.value(); }
    [[nodiscard]] const std::string& message() const noexcept { return message_; }

private:
    Status(std::error_code code, std::string message) : code_(code), message_(std::move(message)) {}

    std::error_code code_;
    std::string message_;
};

/// A value or the Status saying why there is none (std::expected is C++23).
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : value_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
    Result(Status error) : status_(std::move(error)) { // NOLINT(google-explicit-constructor)
        if (status_.ok()) {
            status_ = Status::from_errno(EINVAL, "internal error", "a Result built from success");
        }
    }

    [[nodiscard]] bool ok() const noexcept { return value_.has_value(); }
    /// Why there is no value; success when there is one.
    [[nodiscard]] const Status& status() const noexcept { return status_; }
    /// The value; only when ok().
    [[nodiscard]] T& value() & noexcept { return *value_; }
    [[nodiscard]] const T& value() const& noexcept { return *value_; }
    [[nodiscard]] T&& value() && noexcept { return std::move(*value_); }
    T* operator->() noexcept { return &*value_; }
    const T* operator->() const noexcept { return &*value_; }

private:
    Status status_;
    std::optional<T> value_;
};

} // namespace userblk
