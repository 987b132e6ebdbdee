// A fast path for the common small requests: a flat JSON object whose
// members are only "op", "id", "key" and "value", each a plain scalar. Such a
// line is scanned once, without building a nlohmann::json DOM.
//
// The scanner only ever says "this line is simple, and here are its pieces";
// anything else (escapes, nested values, floats, unknown or repeated members,
// malformed text) makes it return false, and the caller runs the full parser,
// which then produces exactly the answer (or error) it always did. So the
// fast path never decides an error itself.
//
// Thread safety: pure function.
#pragma once

#include <string_view>

namespace kvstore::net {

struct FastRequest {
  std::string_view op;     // the op name (a string without escapes)
  std::string_view id;     // canonical JSON text of "id"; empty when absent
  std::string_view key;    // the key's bytes (a string without escapes)
  std::string_view value;  // canonical JSON text of "value"; empty when absent
  bool has_key = false;
};

// Precondition: line is valid UTF-8 (IsValidUtf8). True when line is a
// simple request as above; the views point into line. Every JSON text the
// views hold is already in the canonical form nlohmann's compact dump would
// give (strings without escapes or control characters, true/false/null,
// integers that fit in 64 bits without a fraction or exponent).
bool ParseFastRequest(std::string_view line, FastRequest* out);

}  // namespace kvstore::net
