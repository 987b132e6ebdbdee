#include "net/framer.h"

#include <cstring>

namespace kvstore::net {

LineFramer::Result LineFramer::Next(std::string* line) {
  if (too_large_) return Result::kTooLarge;
  // Resume the newline search where the last call stopped, so a long line
  // arriving in many small reads is scanned once, not once per read.
  size_t from = scanned_ > consumed_ ? scanned_ : consumed_;
  const char* base = buffer_.data();
  const void* nl = std::memchr(base + from, '\n', buffer_.size() - from);
  if (nl == nullptr) {
    scanned_ = buffer_.size();
    if (buffer_.size() - consumed_ > max_line_bytes_) {
      too_large_ = true;
      buffer_.clear();
      consumed_ = scanned_ = 0;
      return Result::kTooLarge;
    }
    // Drop what was consumed so the buffer holds at most one partial line.
    if (consumed_ > 0) {
      buffer_.erase(0, consumed_);
      scanned_ -= consumed_;
      consumed_ = 0;
    }
    return Result::kNeedMore;
  }
  size_t end = static_cast<const char*>(nl) - base;
  size_t len = end - consumed_;
  if (len > max_line_bytes_) {
    too_large_ = true;
    buffer_.clear();
    consumed_ = scanned_ = 0;
    return Result::kTooLarge;
  }
  if (len > 0 && base[end - 1] == '\r') --len;  // tolerate CRLF from telnet-like clients
  line->assign(base + consumed_, len);
  consumed_ = end + 1;
  scanned_ = consumed_;
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = scanned_ = 0;
  }
  return Result::kLine;
}

}  // namespace kvstore::net
