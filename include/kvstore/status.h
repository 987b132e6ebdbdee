// Status: the outcome of an operation, returned by value and never thrown.
//
// Thread safety: a Status is a plain value; distinct objects may be used from
// different threads freely, one object needs external synchronization.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace kvstore {

class [[nodiscard]] Status {
 public:
  enum class Code : unsigned char {
    kOk = 0,
    kNotFound,
    kCorruption,
    kIOError,
    kInvalidArgument,
    kBusy,
    kNoSpace,
    kNotSupported,
    kReadOnly,
  };

  Status() noexcept = default;
  Status(const Status& other) : code_(other.code_), message_(other.message_) {}
  Status& operator=(const Status& other) {
    code_ = other.code_;
    message_ = other.message_;
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status OK() { return Status(); }
  static Status NotFound(std::string_view msg = "") { return Status(Code::kNotFound, msg); }
  static Status Corruption(std::string_view msg) { return Status(Code::kCorruption, msg); }
  static Status IOError(std::string_view msg) { return Status(Code::kIOError, msg); }
  static Status InvalidArgument(std::string_view msg) {
    return Status(Code::kInvalidArgument, msg);
  }
  static Status Busy(std::string_view msg) { return Status(Code::kBusy, msg); }
  static Status NoSpace(std::string_view msg) { return Status(Code::kNoSpace, msg); }
  static Status NotSupported(std::string_view msg) { return Status(Code::kNotSupported, msg); }
  // The store refuses writes after an error it cannot safely continue from
  // (for example a failed fsync); the message carries the original reason.
  static Status ReadOnly(std::string_view msg) { return Status(Code::kReadOnly, msg); }

  bool ok() const { return code_ == Code::kOk; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsIOError() const { return code_ == Code::kIOError; }
  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsBusy() const { return code_ == Code::kBusy; }
  bool IsNoSpace() const { return code_ == Code::kNoSpace; }
  bool IsNotSupported() const { return code_ == Code::kNotSupported; }
  bool IsReadOnly() const { return code_ == Code::kReadOnly; }

  Code code() const { return code_; }
  // The message alone, without the code name; empty for OK.
  std::string_view message() const {
    return message_ ? std::string_view(*message_) : std::string_view();
  }
  // "OK", or "<CodeName>: <message>".
  std::string ToString() const;

 private:
  Status(Code code, std::string_view msg)
      : code_(code), message_(msg.empty() ? nullptr : std::make_shared<const std::string>(msg)) {}

  Code code_ = Code::kOk;
  // Shared and immutable, so copying an error is cheap and OK carries nothing.
  std::shared_ptr<const std::string> message_;
};

}  // namespace kvstore
