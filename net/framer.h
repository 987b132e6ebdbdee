// LineFramer: splits a byte stream into newline-terminated lines (NDJSON
// framing). Pure: it never does I/O, so the server and the tests feed it
// bytes however they arrive.
//
// Thread safety: one framer per connection, used by one thread at a time.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvstore::net {

inline constexpr size_t kDefaultMaxLineBytes = 64u * 1024 * 1024;

class LineFramer {
 public:
  enum class Result {
    kLine,      // *line holds the next line, without its '\n' (nor a '\r' before it)
    kNeedMore,  // no complete line buffered; Append more bytes
    kTooLarge,  // a line exceeds max_line_bytes; the stream cannot be resynchronized
  };

  explicit LineFramer(size_t max_line_bytes = kDefaultMaxLineBytes)
      : max_line_bytes_(max_line_bytes) {}

  void Append(std::string_view bytes) { buffer_.append(bytes); }

  // Takes the next complete line out of the buffer. Once kTooLarge is
  // returned it is returned forever: the caller answers and closes.
  Result Next(std::string* line);

  // Bytes buffered but not yet returned as lines.
  size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  const size_t max_line_bytes_;
  std::string buffer_;
  size_t consumed_ = 0;  // prefix of buffer_ already returned
  size_t scanned_ = 0;   // prefix of buffer_ known to hold no '\n' past consumed_
  bool too_large_ = false;
};

}  // namespace kvstore::net
