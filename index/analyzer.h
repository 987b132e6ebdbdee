// The analyzer: turns stored values and queries into search terms, the same
// way on both sides, so that what is indexed is what a query looks for.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "engine/coding/checksum.h"
#include "kvstore/status.h"

namespace kvstore::index {

struct AnalyzerOptions {
  std::string stemmer_language = "english";  // a Snowball language name; "" = no stemming
  bool stop_words = false;                    // drop common English stop words
  // Strip combining marks after decomposition, so "café" and "cafe" are the
  // same term. Without it marks stay inside the word.
  bool strip_diacritics = true;
};

// Tokens longer than this many bytes are cut at the last UTF-8 boundary at
// or before it: such "words" are mostly hashes and base64, and a bound keeps
// the term dictionary sane.
inline constexpr size_t kMaxTokenBytes = 64;

// The hash of a token (a raw word or a term) that the analysis computes
// once and hands on with it (Analyzer::RawToken), so that the stem cache,
// the hashing embedder and the term counting do not each hash it again.
// The seed is the hashing embedder's unigram seed: its unigram feature is
// exactly this hash of the raw word. Segment writers key their term
// dictionaries by its low 32 bits (AnalyzedDoc::term_hashes); it is never
// stored on disk.
inline constexpr uint64_t kTokenHashSeed = 0x756e69;
inline uint64_t TokenHash(std::string_view token) { return Checksum64(token, kTokenHashSeed); }

// Thread-safe: Snowball stemmers are not, so each call borrows one from a
// small pool.
class Analyzer {
 public:
  ~Analyzer();
  Analyzer(const Analyzer&) = delete;
  Analyzer& operator=(const Analyzer&) = delete;

  // InvalidArgument for a language Snowball does not know.
  static Status Create(const AnalyzerOptions& options, std::unique_ptr<Analyzer>* out);

  // Appends the tokens of UTF-8 text: NFKC, Unicode case folding, combining
  // marks stripped (strip_diacritics), split on every code point that is not
  // a letter, digit or (kept) mark; stop words dropped; stemmed.
  // Each Han, Hiragana, Katakana and Hangul code point is a token of its own,
  // since those scripts do not separate words with spaces. Emoji and
  // punctuation separate tokens. Invalid UTF-8 bytes separate tokens too and
  // are otherwise dropped: never an error.
  void Tokenize(std::string_view text, std::vector<std::string>* tokens) const;

  // The same tokens, handed to fn(arg, token) one by one instead of copied
  // into strings: the view is valid only during the call.
  using TokenFn = void (*)(void* arg, std::string_view token);
  void Tokenize(std::string_view text, TokenFn fn, void* arg) const;
  template <typename F>
  void ForEachToken(std::string_view text, F&& f) const {
    Tokenize(
        text, [](void* a, std::string_view t) { (*static_cast<std::remove_reference_t<F>*>(a))(t); },
        const_cast<void*>(static_cast<const void*>(&f)));
  }

  // The same tokens, each with the word it came from before stop words and
  // stemming, and both hashed: fn(arg, token). One pass then feeds both the
  // full-text index and the hashing embedder, whose features are unstemmed
  // words (an analyzer without stemming or stop words and with the same
  // strip_diacritics emits exactly the raw words).
  struct RawToken {
    std::string_view raw;
    std::string_view term;  // empty for a stop word
    uint64_t raw_hash;      // TokenHash(raw)
    uint64_t term_hash;     // TokenHash(term); 0 for a stop word
  };
  using RawTokenFn = void (*)(void* arg, const RawToken& token);
  void TokenizeRaw(std::string_view text, RawTokenFn fn, void* arg) const;
  template <typename F>
  void ForEachRawToken(std::string_view text, F&& f) const {
    TokenizeRaw(
        text, [](void* a, const RawToken& t) { (*static_cast<std::remove_reference_t<F>*>(a))(t); },
        const_cast<void*>(static_cast<const void*>(&f)));
  }

  const AnalyzerOptions& options() const { return options_; }

 private:
  struct StemmerPool;
  explicit Analyzer(const AnalyzerOptions& options);
  void Run(std::string_view text, TokenFn fn, RawTokenFn raw_fn, void* arg) const;
  AnalyzerOptions options_;
  std::unique_ptr<StemmerPool> pool_;
};

// The text a stored value contributes to full-text and semantic indexing:
// a JSON string -> the string; a JSON object or array -> every string leaf
// (not the object keys) joined by "\n"; anything else (JSON numbers, bools,
// null, non-JSON bytes) -> the bytes themselves. Never throws; parsing is
// iterative, so deep nesting costs memory, not stack.
void ExtractText(std::string_view value, std::string* text);
// The same text, as a view of value itself where it is that (a plain JSON
// string's bytes between the quotes, or the raw bytes), else of *scratch,
// which holds it: no copy of the common cases.
std::string_view ExtractTextView(std::string_view value, std::string* scratch);

// XXH3-64 of the raw value bytes: the exact-value index key.
uint64_t ValueHash(std::string_view value);

}  // namespace kvstore::index
