// Embedder: turns text into vectors for semantic search.
//
// Thread safety: Embed may be called from many threads at once.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/status.h"

namespace kvstore {

class Embedder {
 public:
  virtual ~Embedder() = default;
  virtual int dimension() const = 0;
  // Recorded in index segments: a segment built with another embedder name
  // or dimension is rebuilt, so change the name whenever the vectors change.
  virtual std::string name() const = 0;
  // One L2-normalised vector of dimension() floats per text, in order; all
  // zeros when a text has no features.
  virtual Status Embed(const std::vector<std::string_view>& texts,
                       std::vector<std::vector<float>>* vectors) = 0;
  // False for an embedder that may be slow or unavailable (a remote
  // service): the DB then never calls it on a write, a flush or a
  // compaction. Writes are indexed without their vectors at once, and a
  // background thread embeds them later (a backlog, in DBStats).
  virtual bool synchronous() const { return true; }
};

// The built-in offline embedder, deterministic and needing no model file:
// hashed word unigrams and bigrams and character trigrams of the case-folded,
// accent-stripped words, each into one of `dimension` buckets with a hashed
// sign, weighted 1 + log(count) (of the word, or of the bigram) times a
// fixed weight per feature kind, then L2-normalised (docs/search.md).
//
// What it can match: texts sharing words; word forms sharing most of their
// letters ("index" / "indexes" / "indexing") and typos ("serach" / "search")
// through the trigrams; word order a little, through the bigrams.
// What it cannot: synonyms ("car" / "automobile"), paraphrase, or the same
// meaning in another language: for those use a model through an HTTP embedder.
// dimension is clamped to at least 8.
std::shared_ptr<Embedder> NewHashingEmbedder(int dimension = 256);

// For those who embed on their side: a semantic index of `dimension` whose
// vectors all come from the client, with each put
// (WriteBatch::PutWithVector) and each query (SemanticSearchByVector).
// Values written without a vector are found by the other indexes only, and
// a search by text answers NotSupported. name() is "client:<dimension>".
std::shared_ptr<Embedder> NewClientVectorsEmbedder(int dimension);

// An embedding model behind HTTP (not synchronous(): the DB embeds in the
// background). Three request shapes:
//   kOpenAI: POST <base>/v1/embeddings  {"model","input":[...]}
//            -> {"data":[{"embedding":[...],"index":i}, ...]}
//   kOllama: POST <base>/api/embed      {"model","input":[...]}
//            -> {"embeddings":[[...], ...]}
//   kTEI:    POST <base>/embed          {"inputs":[...],"truncate":true}
//            -> [[...], ...]            (text-embeddings-inference)
enum class HttpEmbedderApi { kOpenAI, kOllama, kTEI };

struct HttpEmbedderOptions {
  HttpEmbedderApi api = HttpEmbedderApi::kOpenAI;
  // http://host:port[/base] (https:// too, where cpp-httplib was built with
  // OpenSSL, as Debian's is). For kOpenAI a base ending in /v1 is accepted
  // as the usual "base URL" and not doubled.
  std::string url;
  std::string model;  // sent as "model" (kOpenAI, kOllama); TEI serves one model
  // Required: every answer is checked against it, and it is the dimension
  // of the index.
  int dimension = 0;
  // The name of an environment variable holding an API key, sent as
  // "Authorization: Bearer <key>"; empty sends none. Read once, at
  // NewHttpEmbedder, which fails if the variable is unset or empty.
  std::string api_key_env;
  size_t batch_size = 32;         // texts per request
  int connect_timeout_ms = 2000;
  int read_timeout_ms = 30000;    // a model on a CPU can take seconds per batch
  // A failed request (connection error, timeout, HTTP 408, 429 or 5xx) is
  // retried this many times, after backoff_ms, then doubling.
  int retries = 2;
  int backoff_ms = 100;
};

// InvalidArgument for a bad URL, missing model (kOpenAI, kOllama),
// dimension <= 0 or a missing API key variable. name() is
// "http:<openai|ollama|tei>:<model>:<dimension>" (no URL: the same model
// served elsewhere gives the same vectors). Vectors are L2-normalised here;
// an empty text gets all zeros without a request.
Status NewHttpEmbedder(const HttpEmbedderOptions& options, std::shared_ptr<Embedder>* out);

}  // namespace kvstore
