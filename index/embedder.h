// Embedders for semantic search. The interface is public (kvstore::Embedder
// in include/kvstore/embedder.h) so that applications can supply their own.
#pragma once

#include <atomic>
#include <string_view>
#include <vector>

#include "index/analyzer.h"
#include "kvstore/embedder.h"

namespace kvstore::index {

using kvstore::Embedder;
using kvstore::NewHashingEmbedder;

// The name the hashing embedder records in segments; bump the version when
// its features or weights change, so that old segments are rebuilt.
// v2: the same features, summed in another order (last-bit differences).
// v3: a word's trigrams are weighted by the word's count, not by each
// trigram's own count (a trigram shared by two different words counts
// twice, at 1 + ln 1 each, not once at 1 + ln 2); trigrams and bigrams are
// hashed by a multiply-fold, not XXH3; the bucket is taken from the hash's
// low 63 bits by a multiply (h * dim / 2^63), not h % dim.
inline constexpr const char* kHashingEmbedderName = "kvstore-hashing-v3";

// The hashing embedder's vector of one text, built from the text's words as
// an Analyzer without stemming or stop words (and with strip_diacritics)
// emits them. AnalyzeDoc feeds it the raw words of the pass it makes for the
// full-text terms anyway, so a written value is tokenized once, not twice.
// The result equals the embedder's own Embed of the text bit for bit (the
// embedder uses a sketch too). Uses a scratch table of the calling
// thread: one sketch per thread at a time.
class HashingSketch {
 public:
  HashingSketch();
  HashingSketch(const HashingSketch&) = delete;
  HashingSketch& operator=(const HashingSketch&) = delete;
  void Add(std::string_view word) { Add(word, TokenHash(word)); }
  // hash: TokenHash(word), which the analysis has already (RawToken).
  void Add(std::string_view word, uint64_t hash);
  // The L2-normalised vector of `dimension` floats (all zeros without
  // features); resets the sketch for the next text.
  void Finish(int dimension, std::vector<float>* out);

 private:
  struct Scratch;
  Scratch& s_;
  uint64_t prev_hash_ = 0;  // the previous word's, for bigrams
  bool have_prev_ = false;
};

// Tests: true makes HashingSketch take its general trigram path for every
// word (the fast path for short ASCII words must give the same vectors).
extern std::atomic<bool> g_sketch_general_path_for_test;

// The dimension of `embedder` when it is the built-in hashing embedder (its
// vectors can then come from a HashingSketch), else 0.
int HashingEmbedderDimension(const Embedder* embedder);

}  // namespace kvstore::index
