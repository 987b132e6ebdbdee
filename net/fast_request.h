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
#include <utility>
#include <vector>

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

// The same for the common bulk write, where the DOM costs most (a large
// line of small items): {"op":"bulk_set","items":[[K,V],...]} whose members
// are only "op", "id" and "items" (each once, in any order), with at least
// one item, every item a two-element array of a plain string key and a
// canonical scalar value. Items given as objects, values that are arrays or
// objects, and anything else: false, for the full parser.
struct FastBulkSet {
  std::string_view id;  // as FastRequest::id
  std::vector<std::pair<std::string_view, std::string_view>> items;  // key bytes, value text
};

// Same precondition and guarantees as ParseFastRequest; the views point into
// line, items in order.
bool ParseFastBulkSet(std::string_view line, FastBulkSet* out);

}  // namespace kvstore::net
