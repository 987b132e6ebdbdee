#include "kvstore/status.h"

namespace kvstore {

namespace {
std::string_view CodeName(Status::Code code) {
  switch (code) {
    case Status::Code::kOk: return "OK";
    case Status::Code::kNotFound: return "NotFound";
    case Status::Code::kCorruption: return "Corruption";
    case Status::Code::kIOError: return "IOError";
    case Status::Code::kInvalidArgument: return "InvalidArgument";
    case Status::Code::kBusy: return "Busy";
    case Status::Code::kNoSpace: return "NoSpace";
    case Status::Code::kNotSupported: return "NotSupported";
    case Status::Code::kReadOnly: return "ReadOnly";
  }
  return "Unknown";
}
}  // namespace

std::string Status::ToString() const {
  std::string out(CodeName(code_));
  if (message_) {
    out += ": ";
    out += *message_;
  }
  return out;
}

}  // namespace kvstore
