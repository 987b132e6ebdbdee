#include "index/analyzer.h"

#include <libstemmer.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <mutex>
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

struct Analyzer::StemmerPool {
  std::string language;
  std::mutex mu;
  std::vector<sb_stemmer*> idle;

  ~StemmerPool() {
    for (sb_stemmer* s : idle) sb_stemmer_delete(s);
  }
  sb_stemmer* Acquire() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!idle.empty()) {
        sb_stemmer* s = idle.back();
        idle.pop_back();
        return s;
      }
    }
    return sb_stemmer_new(language.c_str(), "UTF_8");
  }
  void Release(sb_stemmer* s) {
    if (s == nullptr) return;
    std::lock_guard<std::mutex> lock(mu);
    idle.push_back(s);
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
    analyzer->pool_->idle.push_back(probe);
  }
  *out = std::move(analyzer);
  return Status::OK();
}

namespace {

class TokenSink {
 public:
  TokenSink(const AnalyzerOptions& options, sb_stemmer* stemmer, std::vector<std::string>* tokens)
      : options_(options), stemmer_(stemmer), tokens_(tokens) {}

  void Emit(std::string_view token, bool stem) {
    if (token.empty()) return;
    if (token.size() > kMaxTokenBytes) {
      size_t cut = kMaxTokenBytes;
      while (cut > 0 && (static_cast<unsigned char>(token[cut]) & 0xC0) == 0x80) cut--;
      token = token.substr(0, cut);
      if (token.empty()) return;
    }
    if (options_.stop_words && IsStopWord(token)) return;
    if (stem && stemmer_ != nullptr) {
      const sb_symbol* s = sb_stemmer_stem(stemmer_, reinterpret_cast<const sb_symbol*>(token.data()),
                                           static_cast<int>(token.size()));
      if (s != nullptr) {
        int len = sb_stemmer_length(stemmer_);
        if (len > 0) {
          tokens_->emplace_back(reinterpret_cast<const char*>(s), static_cast<size_t>(len));
          return;
        }
      }
    }
    tokens_->emplace_back(token);
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
  const AnalyzerOptions& options_;
  sb_stemmer* stemmer_;
  std::vector<std::string>* tokens_;
};

}  // namespace

void Analyzer::Tokenize(std::string_view text, std::vector<std::string>* tokens) const {
  if (text.empty()) return;
  sb_stemmer* stemmer = pool_ ? pool_->Acquire() : nullptr;
  TokenSink sink(options_, stemmer, tokens);
  int map_options = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT | UTF8PROC_CASEFOLD | UTF8PROC_IGNORE;
  if (options_.strip_diacritics) map_options |= UTF8PROC_STRIPMARK;

  std::string chunk, lower;
  size_t pos = 0;
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const size_t size = text.size();
  while (pos < size) {
    // Copy up to a chunk of valid UTF-8, invalid bytes turned into spaces,
    // cut at an ASCII separator so that no word or combining sequence
    // straddles two chunks (unless a "word" is longer than a chunk).
    chunk.clear();
    while (pos < size) {
      unsigned char b = bytes[pos];
      if (b < 0x80) {
        chunk.push_back(static_cast<char>(b));
        pos++;
        if (chunk.size() >= kChunkBytes && Classify(b) == CharClass::kSeparator) break;
      } else {
        utf8proc_int32_t cp;
        utf8proc_ssize_t len = utf8proc_iterate(bytes + pos, static_cast<utf8proc_ssize_t>(size - pos), &cp);
        if (len <= 0) {
          chunk.push_back(' ');
          pos++;
        } else {
          chunk.append(text.data() + pos, static_cast<size_t>(len));
          pos += static_cast<size_t>(len);
        }
      }
      if (chunk.size() >= 2 * kChunkBytes) break;
    }
    // Normalise run by run between ASCII separators: plain ASCII runs (most
    // words of most text) only need lower-casing, and no normalisation
    // crosses an ASCII separator (combining marks are never ASCII).
    size_t i = 0;
    const size_t n = chunk.size();
    while (i < n) {
      const auto b = static_cast<unsigned char>(chunk[i]);
      if (b < 0x80 && Classify(b) == CharClass::kSeparator) {
        i++;
        continue;
      }
      size_t j = i;
      bool ascii = true;
      for (; j < n; j++) {
        const auto c = static_cast<unsigned char>(chunk[j]);
        if (c >= 0x80) {
          ascii = false;
        } else if (Classify(c) == CharClass::kSeparator) {
          break;
        }
      }
      const std::string_view run(chunk.data() + i, j - i);
      if (ascii) {
        lower.assign(run);
        for (char& c : lower) {
          if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        }
        sink.Emit(lower, true);
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
  }
  if (pool_) pool_->Release(stemmer);
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
  text->clear();
  size_t i = value.find_first_not_of(" \t\r\n");
  if (i == std::string_view::npos || (value[i] != '"' && value[i] != '[' && value[i] != '{')) {
    text->assign(value);
    return;
  }
  TextCollector collector(text);
  bool ok = false;
  try {
    ok = Json::sax_parse(value.data(), value.data() + value.size(), &collector);
  } catch (...) {
    ok = false;
  }
  if (!ok || collector.scalar()) text->assign(value);
}

uint64_t ValueHash(std::string_view value) { return Checksum64(value); }

}  // namespace kvstore::index
