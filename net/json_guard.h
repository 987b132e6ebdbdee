// Linear checks run on a request line before it reaches nlohmann::json,
// whose parser recurses once per nesting level (a line of a million '['
// would overflow the stack) and throws on invalid UTF-8.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <string_view>

namespace kvstore::net {

// True when text is well-formed UTF-8 (no overlong forms, no surrogates,
// nothing above U+10FFFF).
bool IsValidUtf8(std::string_view text);

// True when no '[' / '{' outside a JSON string nests deeper than max_depth.
// Does not validate the JSON; it only bounds what the recursive parser sees.
bool NestingWithin(std::string_view text, size_t max_depth);

}  // namespace kvstore::net
