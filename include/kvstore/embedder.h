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
};

// The built-in offline embedder, deterministic and needing no model file:
// hashed word unigrams and bigrams and character trigrams of the case-folded,
// accent-stripped words, each into one of `dimension` buckets with a hashed
// sign, weighted 1 + log(tf) times a fixed weight per feature kind, then
// L2-normalised.
//
// What it can match: texts sharing words; word forms sharing most of their
// letters ("index" / "indexes" / "indexing") and typos ("serach" / "search")
// through the trigrams; word order a little, through the bigrams.
// What it cannot: synonyms ("car" / "automobile"), paraphrase, or the same
// meaning in another language: for those use a model through an HTTP embedder.
// dimension is clamped to at least 8.
std::shared_ptr<Embedder> NewHashingEmbedder(int dimension = 256);

}  // namespace kvstore
