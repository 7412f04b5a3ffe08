// Status / StatusOr: how errors cross module boundaries in modserve.
//
// A Status is either OK or carries a code and a human-readable message that
// names the problem (the file, the field, the tensor). Exceptions thrown by
// LibTorch are caught at the engine's edge and turned into a Status; only the
// gRPC service maps codes to gRPC codes.
//
// Thread-safety: plain values; safe to copy between threads.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace modserve {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kDataLoss,          // corrupt or truncated data on disk
  kFailedPrecondition,
  kResourceExhausted,
  kUnavailable,
  kInternal,
  kCancelled,
  kDeadlineExceeded,
  kUnauthenticated,
};

class Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(StatusCode code, std::string message) { return Status(code, std::move(message)); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

 private:
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return Status::Error(StatusCode::kInvalidArgument, std::move(m)); }
inline Status NotFound(std::string m) { return Status::Error(StatusCode::kNotFound, std::move(m)); }
inline Status DataLoss(std::string m) { return Status::Error(StatusCode::kDataLoss, std::move(m)); }
inline Status FailedPrecondition(std::string m) { return Status::Error(StatusCode::kFailedPrecondition, std::move(m)); }
inline Status Internal(std::string m) { return Status::Error(StatusCode::kInternal, std::move(m)); }
inline Status ResourceExhausted(std::string m) { return Status::Error(StatusCode::kResourceExhausted, std::move(m)); }
inline Status Unavailable(std::string m) { return Status::Error(StatusCode::kUnavailable, std::move(m)); }
inline Status Cancelled(std::string m) { return Status::Error(StatusCode::kCancelled, std::move(m)); }
inline Status DeadlineExceeded(std::string m) { return Status::Error(StatusCode::kDeadlineExceeded, std::move(m)); }
inline Status Unauthenticated(std::string m) { return Status::Error(StatusCode::kUnauthenticated, std::move(m)); }
// The upper-case name of a code ("OK", "INVALID_ARGUMENT", ...), as gRPC spells it.
const char* StatusCodeName(StatusCode code);

// Holds either a value or a non-OK Status.
template <typename T>
class StatusOr {
 public:
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT(runtime/explicit)
    if (status_.ok()) status_ = Internal("StatusOr constructed from an OK status without a value");
  }
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT(runtime/explicit)

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { Check(); return *value_; }
  const T& value() const& { Check(); return *value_; }
  T&& value() && { Check(); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  void Check() const {
    if (!status_.ok()) throw std::logic_error("StatusOr::value() on error: " + status_.ToString());
  }
  Status status_;
  std::optional<T> value_;
};

#define MODSERVE_RETURN_IF_ERROR(expr)        \
  do {                                        \
    ::modserve::Status _st = (expr);          \
    if (!_st.ok()) return _st;                \
  } while (0)

}  // namespace modserve
