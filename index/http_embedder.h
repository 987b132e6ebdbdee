// The HTTP embedder (kvstore::NewHttpEmbedder in include/kvstore/embedder.h):
// an embedding service reached with cpp-httplib. cpp-httplib and nlohmann
// stay inside http_embedder.cc; this header holds what tests poke at.
#pragma once

#include <string>
#include <string_view>

#include "kvstore/embedder.h"
#include "kvstore/status.h"

namespace kvstore::index {

// "openai", "ollama", "tei"; false for anything else.
bool ParseHttpEmbedderApi(std::string_view name, HttpEmbedderApi* api);
const char* HttpEmbedderApiName(HttpEmbedderApi api);

// http[s]://host[:port][/base], split; base has no trailing '/'.
struct EmbedderUrl {
  std::string scheme;  // "http" or "https"
  std::string host;
  int port = 0;        // 80 / 443 when absent
  std::string base;    // "" or "/something"
};
Status ParseEmbedderUrl(std::string_view url, EmbedderUrl* out);

}  // namespace kvstore::index
