// Finding keys by value: exact value, full text (BM25) and meaning
// (semantic, cosine similarity over embeddings). Turned on per DB with
// Options::search; the indexes live beside the tables as index segments
// (docs/format/index.md) and in memory beside the memtables.
//
// Every search reads one consistent snapshot (ReadOptions-style `snapshot`,
// or the newest state): a key appears only when the version that matched is
// its newest visible one, so overwritten and deleted keys never show up.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvstore {

class Embedder;  // kvstore/embedder.h
class Snapshot;

struct SearchOptions {
  // Off by default: an embedded store pays nothing for indexes it does not
  // query. kvserver turns it on.
  bool enabled = false;
  // Index only keys starting with one of these; empty indexes every key.
  std::vector<std::string> prefixes;
  // Never index keys starting with one of these (kvserver keeps its own
  // bookkeeping under "\xff"). Applies to what is written from now on.
  std::vector<std::string> excluded_prefixes;
  // Full text: a Snowball stemmer language ("english", "french", …; "" for
  // none) and whether to drop common English stop words.
  std::string stemmer_language = "english";
  bool stop_words = false;
  // The semantic index. embedder == nullptr uses the built-in offline
  // hashing embedder (NewHashingEmbedder in kvstore/embedder.h).
  bool semantic = true;
  std::shared_ptr<Embedder> embedder;
};

struct SearchHit {
  std::string key;
  double score = 0;  // BM25 for full text, cosine for semantic, 0 for exact
  std::optional<std::string> value;  // when include_values was asked for
};

struct ValueSearchOptions {
  size_t limit = 1000;  // at most this many keys, in key order
  bool include_values = false;
  const Snapshot* snapshot = nullptr;
};

enum class MatchMode { kAllTerms, kAnyTerm };

struct FullTextOptions {
  size_t limit = 10;
  MatchMode mode = MatchMode::kAllTerms;
  bool include_values = false;
  const Snapshot* snapshot = nullptr;
};

struct SemanticOptions {
  size_t k = 10;
  double threshold = 0.0;  // keep hits with cosine similarity >= threshold
  bool include_values = false;
  const Snapshot* snapshot = nullptr;
};

}  // namespace kvstore
