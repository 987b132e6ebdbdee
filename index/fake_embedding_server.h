// A small embedding service for tests, on 127.0.0.1: answers the OpenAI
// (/v1/embeddings), Ollama (/api/embed) and TEI (/embed) request shapes with
// the hashing embedder's vectors (deterministic, and similar for similar
// texts), scaled so that a client must normalise them. Knobs make it fail,
// stall or lie about the dimension. Test-only: compiled into test binaries.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvstore/status.h"

namespace kvstore::index {

class FakeEmbeddingServer {
 public:
  explicit FakeEmbeddingServer(int dimension);
  ~FakeEmbeddingServer();  // stops it

  // Listens on 127.0.0.1:port (0: a free port) and serves on a thread of
  // its own until Stop. Start again after Stop reuses the same port when
  // port is 0 and it had one.
  Status Start(int port = 0);
  void Stop();
  int port() const;
  std::string url() const;  // http://127.0.0.1:<port>

  void FailNext(int requests, int http_status = 503);  // then answer normally
  void SetDelayMs(int ms);                             // before every answer
  void SetExtraDimensions(int n);                      // answer dimension + n floats
  void RequireKey(const std::string& key);             // 401 without "Bearer <key>"

  uint64_t requests() const;       // answered with vectors
  uint64_t texts() const;          // embedded
  uint64_t max_batch() const;      // most texts in one request
  std::string last_authorization() const;
  std::string last_model() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstore::index
