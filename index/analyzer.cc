#include "index/analyzer.h"

#include <libstemmer.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <nlohmann/json.hpp>

#include "engine/coding/checksum.h"

namespace kvstore::index {

namespace {

// Lucene's classic English stop set: short, and uncontroversial.
constexpr std::array<std::string_view, 33> kStopWords = {
    "a",    "an",   "and",  "are",   "as",    "at",   "be",   "but",   "by",
    "for",  "if",   "in",   "into",  "is",    "it",   "no",   "not",   "of",
    "on",   "or",   "such", "that",  "the",   "their", "then", "there", "these",
    "they", "this", "to",   "was",   "will",  "with"};

static_assert(std::is_sorted(kStopWords.begin(), kStopWords.end()));

bool IsStopWord(std::string_view token) {
  return std::binary_search(kStopWords.begin(), kStopWords.end(), token);
}

// Scripts written without spaces between words: each code point is a token.
bool IsIdeographic(utf8proc_int32_t cp) {
  return (cp >= 0x3040 && cp <= 0x30FF) ||    // Hiragana, Katakana
         (cp >= 0x31F0 && cp <= 0x31FF) ||    // Katakana phonetic extensions
         (cp >= 0x3400 && cp <= 0x4DBF) ||    // CJK extension A
         (cp >= 0x4E00 && cp <= 0x9FFF) ||    // CJK unified ideographs
         (cp >= 0xF900 && cp <= 0xFAFF) ||    // CJK compatibility ideographs
         (cp >= 0xFF66 && cp <= 0xFF9F) ||    // halfwidth Katakana (NFKC widens them)
         (cp >= 0x1100 && cp <= 0x11FF) ||    // Hangul Jamo
         (cp >= 0x3130 && cp <= 0x318F) ||    // Hangul compatibility Jamo
         (cp >= 0xAC00 && cp <= 0xD7AF) ||    // Hangul syllables
         (cp >= 0x20000 && cp <= 0x3134F);    // CJK extensions B..G
}

enum class CharClass { kSeparator, kWord, kMark, kIdeograph };

CharClass Classify(utf8proc_int32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z')) {
      return CharClass::kWord;
    }
    return CharClass::kSeparator;
  }
  if (IsIdeographic(cp)) return CharClass::kIdeograph;
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return CharClass::kWord;
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
      return CharClass::kMark;
    default:
      return CharClass::kSeparator;
  }
}

// Normalisation works on bounded chunks: utf8proc_map needs 4 bytes per code
// point of scratch, which for a 64 MiB value would be 256 MiB at once.
constexpr size_t kChunkBytes = 64 << 10;

}  // namespace

// Stemming a word costs ~150 ns through Snowball, about as much as all the
// rest of tokenizing it, and word frequencies are Zipfian: a small
// direct-mapped cache of recent (word, stem) pairs answers most calls.
// Each pooled stemmer has its own, so no lock guards it.
// A slot is keyed by the word's TokenHash, which the caller has anyway, and
// keeps the stem's, which the caller needs next. One cache line a slot: a
// lookup misses L1 more often than not (the cache is meant to hold a
// corpus' frequent words, not to stay in L1), and 48-byte slots made a
// third of them two misses. 16384 slots, 1 MiB a pooled stemmer: with
// 4096, a fifth of the lookups of kvbench search's documents (20000 words,
// Zipf-distributed) missed and went to Snowball, and the analysis took 15%
// longer (BM_AnalyzeDocZipf 5.5 -> 4.7 us).
struct StemCache {
  static constexpr size_t kSlots = 16384;
  static constexpr size_t kMaxLen = 23;
  struct alignas(64) Slot {
    uint64_t in_hash = 0;
    uint64_t out_hash = 0;
    uint8_t in_len = 0;  // 0: empty (tokens are never empty)
    uint8_t out_len = 0;
    char in[kMaxLen];
    char out[kMaxLen];
  };
  static_assert(sizeof(Slot) == 64);
  Slot slots[kSlots];
};

struct PooledStemmer {
  sb_stemmer* stemmer = nullptr;
  std::unique_ptr<StemCache> cache;
  std::thread::id last_user;  // the thread that released it last
};

struct Analyzer::StemmerPool {
  std::string language;
  std::mutex mu;
  std::vector<PooledStemmer> idle;

  ~StemmerPool() {
    for (PooledStemmer& s : idle) sb_stemmer_delete(s.stemmer);
  }
  // The stemmer this thread used last when it is idle: its cache's lines
  // are then in this core's caches. Handing threads each other's stemmers
  // (a plain stack does, with two analysing threads) made nearly every
  // cache lookup a transfer from the other core: a fifth of the analysis.
  PooledStemmer Acquire() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!idle.empty()) {
        const std::thread::id me = std::this_thread::get_id();
        size_t pick = idle.size() - 1;
        for (size_t i = 0; i < idle.size(); i++) {
          if (idle[i].last_user == me) pick = i;
        }
        PooledStemmer s = std::move(idle[pick]);
        idle[pick] = std::move(idle.back());
        idle.pop_back();
        return s;
      }
    }
    PooledStemmer s;
    s.stemmer = sb_stemmer_new(language.c_str(), "UTF_8");
    if (s.stemmer != nullptr) s.cache = std::make_unique<StemCache>();
    return s;
  }
  void Release(PooledStemmer s) {
    if (s.stemmer == nullptr) return;
    s.last_user = std::this_thread::get_id();
    std::lock_guard<std::mutex> lock(mu);
    idle.push_back(std::move(s));
  }
};

Analyzer::Analyzer(const AnalyzerOptions& options) : options_(options) {}
Analyzer::~Analyzer() = default;

Status Analyzer::Create(const AnalyzerOptions& options, std::unique_ptr<Analyzer>* out) {
  std::unique_ptr<Analyzer> analyzer(new Analyzer(options));
  if (!options.stemmer_language.empty()) {
    sb_stemmer* probe = sb_stemmer_new(options.stemmer_language.c_str(), "UTF_8");
    if (probe == nullptr) {
      return Status::InvalidArgument("unknown stemmer language: " + options.stemmer_language);
    }
    analyzer->pool_ = std::make_unique<StemmerPool>();
    analyzer->pool_->language = options.stemmer_language;
    PooledStemmer first;
    first.stemmer = probe;
    first.cache = std::make_unique<StemCache>();
    analyzer->pool_->idle.push_back(std::move(first));
  }
  *out = std::move(analyzer);
  return Status::OK();
}

namespace {

bool IsAsciiWord(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z');
}

class TokenSink {
 public:
  TokenSink(const AnalyzerOptions& options, PooledStemmer* stemmer, Analyzer::TokenFn fn, Analyzer::RawTokenFn raw_fn,
            void* arg)
      : options_(options), stemmer_(stemmer), fn_(fn), raw_fn_(raw_fn), arg_(arg) {}

  void Emit(std::string_view token, bool stem) {
    if (token.empty()) return;
    if (token.size() > kMaxTokenBytes) {
      size_t cut = kMaxTokenBytes;
      while (cut > 0 && (static_cast<unsigned char>(token[cut]) & 0xC0) == 0x80) cut--;
      token = token.substr(0, cut);
      if (token.empty()) return;
    }
    const bool stemming = stem && stemmer_ != nullptr && stemmer_->stemmer != nullptr;
    if (raw_fn_ == nullptr && !stemming) {
      if (!options_.stop_words || !IsStopWord(token)) fn_(arg_, token);
      return;
    }
    const uint64_t raw_hash = TokenHash(token);
    if (options_.stop_words && IsStopWord(token)) {
      if (raw_fn_ != nullptr) raw_fn_(arg_, Analyzer::RawToken{token, std::string_view(), raw_hash, 0});
      return;
    }
    uint64_t term_hash = raw_hash;
    const std::string_view term = stemming ? Stem(token, raw_hash, &term_hash) : token;
    if (raw_fn_ != nullptr) {
      raw_fn_(arg_, Analyzer::RawToken{token, term, raw_hash, term_hash});
    } else {
      fn_(arg_, term);
    }
  }

  // An ASCII word as it is in the text: lower-cased into a buffer (only as
  // much as survives the length cut), with no string built.
  void EmitAscii(std::string_view word) {
    const size_t n = std::min(word.size(), kMaxTokenBytes);
    for (size_t i = 0; i < n; i++) {
      char c = word[i];
      lower_[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    }
    Emit(std::string_view(lower_, n), true);
  }

  // Splits normalised (valid UTF-8) text.
  void Split(std::string_view text) {
    const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
    utf8proc_ssize_t n = static_cast<utf8proc_ssize_t>(text.size());
    utf8proc_ssize_t i = 0;
    size_t start = 0;
    bool in_word = false;
    while (i < n) {
      utf8proc_int32_t cp;
      utf8proc_ssize_t len;
      if (p[i] < 0x80) {
        cp = p[i];
        len = 1;
      } else {
        len = utf8proc_iterate(p + i, n - i, &cp);
        if (len <= 0) {  // cannot happen after normalisation; be safe anyway
          len = 1;
          cp = ' ';
        }
      }
      CharClass c = Classify(cp);
      if (c == CharClass::kMark && !in_word) c = CharClass::kSeparator;
      if (c == CharClass::kWord || c == CharClass::kMark) {
        if (!in_word) {
          start = static_cast<size_t>(i);
          in_word = true;
        }
      } else {
        if (in_word) {
          Emit(text.substr(start, static_cast<size_t>(i) - start), true);
          in_word = false;
        }
        if (c == CharClass::kIdeograph) Emit(text.substr(static_cast<size_t>(i), static_cast<size_t>(len)), false);
      }
      i += len;
    }
    if (in_word) Emit(text.substr(start), true);
  }

 private:
  // The stem of token (whose TokenHash is hash), and its TokenHash.
  std::string_view Stem(std::string_view token, uint64_t hash, uint64_t* out_hash) {
    StemCache::Slot* slot = nullptr;
    if (token.size() <= StemCache::kMaxLen) {
      slot = &stemmer_->cache->slots[(hash ^ (hash >> 32)) & (StemCache::kSlots - 1)];
      if (slot->in_hash == hash && slot->in_len == token.size() &&
          std::memcmp(slot->in, token.data(), token.size()) == 0) {
        *out_hash = slot->out_hash;
        return std::string_view(slot->out, slot->out_len);
      }
    }
    std::string_view out = token;
    const sb_symbol* s = sb_stemmer_stem(stemmer_->stemmer, reinterpret_cast<const sb_symbol*>(token.data()),
                                         static_cast<int>(token.size()));
    if (s != nullptr) {
      int len = sb_stemmer_length(stemmer_->stemmer);
      if (len > 0) out = std::string_view(reinterpret_cast<const char*>(s), static_cast<size_t>(len));
    }
    *out_hash = out == token ? hash : TokenHash(out);
    if (slot != nullptr && out.size() <= StemCache::kMaxLen) {
      slot->in_hash = hash;
      slot->out_hash = *out_hash;
      slot->in_len = static_cast<uint8_t>(token.size());
      std::memcpy(slot->in, token.data(), token.size());
      slot->out_len = static_cast<uint8_t>(out.size());
      std::memcpy(slot->out, out.data(), out.size());
    }
    return out;
  }

  const AnalyzerOptions& options_;
  PooledStemmer* stemmer_;
  Analyzer::TokenFn fn_;
  Analyzer::RawTokenFn raw_fn_;  // when set, instead of fn_
  void* arg_;
  char lower_[kMaxTokenBytes];
};

}  // namespace

void Analyzer::Tokenize(std::string_view text, std::vector<std::string>* tokens) const {
  ForEachToken(text, [tokens](std::string_view t) { tokens->emplace_back(t); });
}

void Analyzer::Tokenize(std::string_view text, TokenFn fn, void* arg) const { Run(text, fn, nullptr, arg); }

void Analyzer::TokenizeRaw(std::string_view text, RawTokenFn fn, void* arg) const { Run(text, nullptr, fn, arg); }

void Analyzer::Run(std::string_view text, TokenFn fn, RawTokenFn raw_fn, void* arg) const {
  if (text.empty()) return;
  PooledStemmer stemmer;
  if (pool_) stemmer = pool_->Acquire();
  TokenSink sink(options_, &stemmer, fn, raw_fn, arg);
  int map_options = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT | UTF8PROC_CASEFOLD | UTF8PROC_IGNORE;
  if (options_.strip_diacritics) map_options |= UTF8PROC_STRIPMARK;

  // Normalises a piece of valid UTF-8 run by run between ASCII separators:
  // no normalisation crosses an ASCII separator (combining marks are never
  // ASCII), and plain ASCII runs only need lower-casing.
  auto normalise = [&](std::string_view chunk) {
    size_t i = 0;
    const size_t n = chunk.size();
    while (i < n) {
      const auto b = static_cast<unsigned char>(chunk[i]);
      if (b < 0x80 && !IsAsciiWord(b)) {
        i++;
        continue;
      }
      size_t j = i;
      bool ascii = true;
      for (; j < n; j++) {
        const auto c = static_cast<unsigned char>(chunk[j]);
        if (c >= 0x80) {
          ascii = false;
        } else if (!IsAsciiWord(c)) {
          break;
        }
      }
      const std::string_view run(chunk.data() + i, j - i);
      if (ascii) {
        sink.EmitAscii(run);
      } else {
        utf8proc_uint8_t* mapped = nullptr;
        utf8proc_ssize_t mapped_len =
            utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(run.data()),
                         static_cast<utf8proc_ssize_t>(run.size()), &mapped,
                         static_cast<utf8proc_option_t>(map_options));
        if (mapped_len >= 0 && mapped != nullptr) {
          sink.Split(std::string_view(reinterpret_cast<const char*>(mapped), static_cast<size_t>(mapped_len)));
        }
        std::free(mapped);
      }
      i = j;
    }
  };

  // Runs between ASCII separators straight from the text: an all-ASCII run
  // (most words of most text) is a token as it stands. A run with other
  // bytes is copied, invalid UTF-8 turned into spaces, in pieces of at most
  // 2 * kChunkBytes (utf8proc_map needs 4 bytes per code point of scratch),
  // and normalised.
  std::string chunk;
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const size_t size = text.size();
  size_t pos = 0;
  while (pos < size) {
    if (bytes[pos] < 0x80 && !IsAsciiWord(bytes[pos])) {
      pos++;
      continue;
    }
    size_t end = pos;
    bool ascii = true;
    for (; end < size; end++) {
      const unsigned char c = bytes[end];
      if (c >= 0x80) {
        ascii = false;
      } else if (!IsAsciiWord(c)) {
        break;
      }
    }
    if (ascii) {
      sink.EmitAscii(text.substr(pos, end - pos));
      pos = end;
      continue;
    }
    chunk.clear();
    while (pos < end) {
      unsigned char b = bytes[pos];
      if (b < 0x80) {
        chunk.push_back(static_cast<char>(b));
        pos++;
      } else {
        utf8proc_int32_t cp;
        utf8proc_ssize_t len = utf8proc_iterate(bytes + pos, static_cast<utf8proc_ssize_t>(end - pos), &cp);
        if (len <= 0) {
          chunk.push_back(' ');
          pos++;
        } else {
          chunk.append(text.data() + pos, static_cast<size_t>(len));
          pos += static_cast<size_t>(len);
        }
      }
      if (chunk.size() >= 2 * kChunkBytes) {
        normalise(chunk);
        chunk.clear();
      }
    }
    normalise(chunk);
  }
  if (pool_) pool_->Release(std::move(stemmer));
}

namespace {

using Json = nlohmann::json;

// Collects the string leaves of a JSON document. The SAX parser keeps its
// nesting on a heap stack, so deep documents cannot overflow the call stack.
class TextCollector {
 public:
  explicit TextCollector(std::string* out) : out_(out) {}

  bool null() { return Scalar(); }
  bool boolean(bool) { return Scalar(); }
  bool number_integer(Json::number_integer_t) { return Scalar(); }
  bool number_unsigned(Json::number_unsigned_t) { return Scalar(); }
  bool number_float(Json::number_float_t, const Json::string_t&) { return Scalar(); }
  bool binary(Json::binary_t&) { return Scalar(); }
  bool string(Json::string_t& s) {
    if (kind_ == Kind::kNone) kind_ = Kind::kString;
    if (kind_ == Kind::kScalar) return false;
    if (!first_) out_->push_back('\n');
    first_ = false;
    out_->append(s);
    return true;
  }
  bool start_object(std::size_t) { return Container(); }
  bool key(Json::string_t&) { return true; }
  bool end_object() { return true; }
  bool start_array(std::size_t) { return Container(); }
  bool end_array() { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

  bool scalar() const { return kind_ == Kind::kScalar; }

 private:
  enum class Kind { kNone, kString, kContainer, kScalar };
  bool Scalar() {
    if (kind_ == Kind::kNone) {
      kind_ = Kind::kScalar;
      return false;  // the raw bytes are the text: stop parsing
    }
    return true;
  }
  bool Container() {
    if (kind_ == Kind::kNone) kind_ = Kind::kContainer;
    return true;
  }

  std::string* out_;
  Kind kind_ = Kind::kNone;
  bool first_ = true;
};

}  // namespace

void ExtractText(std::string_view value, std::string* text) {
  const std::string_view view = ExtractTextView(value, text);
  if (view.data() != text->data()) text->assign(view);
}

std::string_view ExtractTextView(std::string_view value, std::string* text) {
  text->clear();
  // Most values kvserver stores are JSON strings of plain text: when there
  // is nothing between the quotes a JSON parser would change or reject
  // (escapes, control bytes, ill-formed UTF-8), the text is just the bytes
  // between them, and the parser need not build it.
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    const std::string_view inner = value.substr(1, value.size() - 2);
    const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(inner.data());
    const size_t n = inner.size();
    bool plain = true;
    for (size_t i = 0; i < n && plain;) {
      // Eight bytes at a time while they are printable ASCII other than '"'
      // and '\\' (nearly all of a text): the byte loop was ~6% of AnalyzeDoc.
      if (i + 8 <= n) {
        constexpr uint64_t kOnes = 0x0101010101010101ull, kHighs = 0x8080808080808080ull;
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        auto has_zero = [](uint64_t x) { return (x - kOnes) & ~x & kHighs; };
        // A byte >= 0x80, or < 0x20, or equal to one of the two.
        const uint64_t special = (w | ((w - 0x20 * kOnes) & ~w)) & kHighs;
        if ((special | has_zero(w ^ ('"' * kOnes)) | has_zero(w ^ ('\\' * kOnes))) == 0) {
          i += 8;
          continue;
        }
      }
      const unsigned char c = p[i];
      if (c >= 0x80) {
        // The parser accepts exactly well-formed UTF-8, as utf8proc does.
        utf8proc_int32_t cp;
        const utf8proc_ssize_t len = utf8proc_iterate(p + i, static_cast<utf8proc_ssize_t>(n - i), &cp);
        plain = len > 0;
        i += plain ? static_cast<size_t>(len) : 0;
      } else {
        plain = c >= 0x20 && c != '"' && c != '\\';
        i++;
      }
    }
    if (plain) return inner;
  }
  size_t i = value.find_first_not_of(" \t\r\n");
  if (i == std::string_view::npos || (value[i] != '"' && value[i] != '[' && value[i] != '{')) return value;
  TextCollector collector(text);
  bool ok = false;
  try {
    ok = Json::sax_parse(value.data(), value.data() + value.size(), &collector);
  } catch (...) {
    ok = false;
  }
  if (!ok || collector.scalar()) return value;
  return *text;
}

uint64_t ValueHash(std::string_view value) { return Checksum64(value); }

}  // namespace kvstore::index
