#include "index/analyzer.h"

#include <gtest/gtest.h>
#include <libstemmer.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "index/embedder.h"
#include "index/segment.h"

namespace kvstore::index {
namespace {

std::vector<std::string> Tokens(std::string_view text, AnalyzerOptions options = {}) {
  std::unique_ptr<Analyzer> analyzer;
  EXPECT_TRUE(Analyzer::Create(options, &analyzer).ok());
  std::vector<std::string> tokens;
  analyzer->Tokenize(text, &tokens);
  return tokens;
}

AnalyzerOptions NoStem() {
  AnalyzerOptions o;
  o.stemmer_language.clear();
  return o;
}

using V = std::vector<std::string>;

TEST(AnalyzerTest, UnknownLanguageIsInvalidArgument) {
  AnalyzerOptions o;
  o.stemmer_language = "klingon";
  std::unique_ptr<Analyzer> analyzer;
  EXPECT_TRUE(Analyzer::Create(o, &analyzer).IsInvalidArgument());
  o.stemmer_language = "german";
  EXPECT_TRUE(Analyzer::Create(o, &analyzer).ok());
}

TEST(AnalyzerTest, CaseAndPunctuation) {
  EXPECT_EQ(Tokens("Hello, WORLD! foo-bar_baz 42x", NoStem()), (V{"hello", "world", "foo", "bar", "baz", "42x"}));
  EXPECT_EQ(Tokens("", NoStem()), V{});
  EXPECT_EQ(Tokens("  ...!!  ", NoStem()), V{});
  EXPECT_EQ(Tokens("ÀÉÎ Straße ΣΟΦΊΑ", NoStem()), (V{"aei", "strasse", "σοφια"}));
}

TEST(AnalyzerTest, Diacritics) {
  EXPECT_EQ(Tokens("café Crème naïve", NoStem()), (V{"cafe", "creme", "naive"}));
  // Decomposed input folds the same way.
  EXPECT_EQ(Tokens("cafe\xCC\x81", NoStem()), V{"cafe"});
  AnalyzerOptions keep = NoStem();
  keep.strip_diacritics = false;
  EXPECT_EQ(Tokens("café", keep), V{"caf\xC3\xA9"});
  EXPECT_EQ(Tokens("cafe\xCC\x81", keep), V{"caf\xC3\xA9"});  // NFKC composes
}

TEST(AnalyzerTest, NfkcCompatibility) {
  // Full-width letters and digits, a ligature.
  EXPECT_EQ(Tokens("ＡＢＣ１２３ ﬁne", NoStem()), (V{"abc123", "fine"}));
}

TEST(AnalyzerTest, CjkCharactersAreTokens) {
  EXPECT_EQ(Tokens("東京タワーへ行く", NoStem()), (V{"東", "京", "タ", "ワ", "ー", "へ", "行", "く"}));
  EXPECT_EQ(Tokens("한국어abc", NoStem()), (V{"한", "국", "어", "abc"}));
  EXPECT_EQ(Tokens("hello世界", NoStem()), (V{"hello", "世", "界"}));
}

TEST(AnalyzerTest, EmojiSeparate) {
  EXPECT_EQ(Tokens("pizza🍕party 👍🏽ok", NoStem()), (V{"pizza", "party", "ok"}));
}

TEST(AnalyzerTest, InvalidUtf8IsSkipped) {
  EXPECT_EQ(Tokens("ab\xff" "cd \xc3 ef \xed\xa0\x80gh", NoStem()), (V{"ab", "cd", "ef", "gh"}));
  std::string garbage;
  for (int i = 0; i < 4096; i++) garbage.push_back(static_cast<char>((i * 7919) & 0xff));
  Tokens(garbage);  // must not crash
}

TEST(AnalyzerTest, LongTokensAreTruncatedAtACharacterBoundary) {
  std::string a(200, 'a');
  auto t = Tokens(a, NoStem());
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0], std::string(kMaxTokenBytes, 'a'));
  std::string e;
  for (int i = 0; i < 100; i++) e += "é";  // 2 bytes each, stripped to 'e' by default
  AnalyzerOptions keep = NoStem();
  keep.strip_diacritics = false;
  t = Tokens("x" + e, keep);  // odd offset: the cut must back up one byte
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].size(), kMaxTokenBytes - 1);
}

TEST(AnalyzerTest, Stemming) {
  EXPECT_EQ(Tokens("running runs indexes"), (V{"run", "run", "index"}));
  EXPECT_EQ(Tokens("running runs", NoStem()), (V{"running", "runs"}));
}

TEST(AnalyzerTest, StopWords) {
  AnalyzerOptions o = NoStem();
  o.stop_words = true;
  EXPECT_EQ(Tokens("The cat and THE hat", o), (V{"cat", "hat"}));
  EXPECT_EQ(Tokens("The cat and THE hat", NoStem()), (V{"the", "cat", "and", "the", "hat"}));
}

TEST(AnalyzerTest, LargeTextAcrossChunks) {
  std::string text;
  for (int i = 0; i < 30000; i++) text += "wörd ";
  auto t = Tokens(text, NoStem());
  ASSERT_EQ(t.size(), 30000u);
  for (const auto& s : t) ASSERT_EQ(s, "word");
}

// A JSON string is scanned eight bytes at a time while they are plain: an
// escape, a non-ASCII character or a control byte anywhere, at any
// alignment, still gets the parser's (or the UTF-8 check's) answer.
TEST(ExtractTextTest, SpecialBytesAtEveryOffset) {
  std::string t;
  for (size_t k = 0; k <= 20; k++) {
    const std::string a(k, 'a'), b(20 - k, 'b');
    ExtractText("\"" + a + "\\n" + b + "\"", &t);
    EXPECT_EQ(t, a + "\n" + b) << k;
    ExtractText("\"" + a + "\\\"" + b + "\"", &t);
    EXPECT_EQ(t, a + "\"" + b) << k;
    ExtractText("\"" + a + "\xc3\xa9" + b + "\"", &t);
    EXPECT_EQ(t, a + "\xc3\xa9" + b) << k;
    // Ill-formed UTF-8 or a raw control byte: not valid JSON, so not read
    // as a JSON string's text (the raw bytes instead).
    for (const char* bad : {"\xc3", "\x01"}) {
      const std::string value = "\"" + a + bad + b + "\"";
      ExtractText(value, &t);
      EXPECT_NE(t, a + bad + b) << k;
    }
    ExtractText("\"" + a + b + "\"", &t);
    EXPECT_EQ(t, a + b) << k;
  }
}

TEST(ExtractTextTest, Json) {
  std::string t;
  ExtractText("\"hello\\nworld\"", &t);
  EXPECT_EQ(t, "hello\nworld");
  ExtractText(R"({"name":"Alice","tags":["a","b"],"age":3,"nested":{"k":"deep"}})", &t);
  EXPECT_EQ(t, "Alice\na\nb\ndeep");
  ExtractText(R"([1, "x", null, true, ["y"]])", &t);
  EXPECT_EQ(t, "x\ny");
  ExtractText("42", &t);
  EXPECT_EQ(t, "42");
  ExtractText("true", &t);
  EXPECT_EQ(t, "true");
  ExtractText("plain text, not JSON", &t);
  EXPECT_EQ(t, "plain text, not JSON");
  ExtractText("{\"broken\": ", &t);
  EXPECT_EQ(t, "{\"broken\": ");
  ExtractText("\"a\" trailing", &t);
  EXPECT_EQ(t, "\"a\" trailing");
  ExtractText("", &t);
  EXPECT_EQ(t, "");
  ExtractText("{}", &t);
  EXPECT_EQ(t, "");
}

// The view gives ExtractText's text, and points into the value itself for
// a plain JSON string and for bytes that are not JSON (nothing copied).
TEST(ExtractTextTest, ViewIsTheTextAndAvoidsCopies) {
  const std::vector<std::string> values = {
      "\"plain words\"", "\"esc\\naped\"", "\"caf\xc3\xa9\"", "\"bad \xc3\"", R"({"a":"x","b":["y"]})",
      "[1, \"x\"]", "42", "not json", "", "\"\"", "{}", "\"a\" trailing", "  \"spaced\"  "};
  for (const std::string& value : values) {
    std::string want, scratch;
    ExtractText(value, &want);
    const std::string_view view = ExtractTextView(value, &scratch);
    EXPECT_EQ(view, want) << value;
    const bool inside = view.data() >= value.data() && view.data() + view.size() <= value.data() + value.size();
    if (value == "\"plain words\"" || value == "\"caf\xc3\xa9\"" || value == "42" || value == "not json") {
      EXPECT_TRUE(inside) << value;
    }
    if (!inside && !view.empty()) {
      EXPECT_EQ(view.data(), scratch.data()) << value;
    }
  }
}

TEST(ExtractTextTest, DeepNestingDoesNotCrash) {
  std::string deep(100000, '[');
  std::string t;
  ExtractText(deep, &t);
  EXPECT_EQ(t, deep);  // invalid JSON: the bytes themselves
  std::string valid = std::string(100000, '[') + "\"x\"" + std::string(100000, ']');
  ExtractText(valid, &t);
  EXPECT_EQ(t, "x");
}

TEST(HashingEmbedderTest, DeterministicAndNormalised) {
  auto e = NewHashingEmbedder(256);
  EXPECT_EQ(e->dimension(), 256);
  std::vector<std::vector<float>> a, b;
  ASSERT_TRUE(e->Embed({"the quick brown fox", "", "!!!"}, &a).ok());
  ASSERT_TRUE(e->Embed({"the quick brown fox"}, &b).ok());
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0], b[0]);
  double norm = 0;
  for (float f : a[0]) norm += f * f;
  EXPECT_NEAR(norm, 1.0, 1e-5);
  for (float f : a[1]) EXPECT_EQ(f, 0.0f);
  for (float f : a[2]) EXPECT_EQ(f, 0.0f);
}

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); i++) d += a[i] * b[i];
  return d;
}

TEST(HashingEmbedderTest, SimilarTextsAreCloser) {
  auto e = NewHashingEmbedder(256);
  std::vector<std::vector<float>> v;
  ASSERT_TRUE(e->Embed({"how to bake sourdough bread at home", "baking sourdough bread at home",
                        "quarterly revenue report for investors", "how to bake sourdogh bread"},
                       &v)
                  .ok());
  EXPECT_GT(Cosine(v[0], v[1]), Cosine(v[0], v[2]) + 0.2);
  EXPECT_GT(Cosine(v[0], v[3]), Cosine(v[0], v[2]) + 0.2);  // a typo still matches
}

// Texts from a pool with every kind of token the analyzer treats apart:
// stop words, stemmable words, marks, compatibility forms, CJK, emoji,
// over-long words, invalid UTF-8, JSON-ish punctuation.
std::string RandomText(std::mt19937_64& rng, int max_words) {
  static const char* const kWords[] = {
      "Hello", "world", "café", "naïve", "Straße", "東京タワー", "search", "indexes", "indexing", "ΣΟΦΊΑ", "x",
      "the", "a", "The", "AND", "into", "running", "runs", "ＡＢＣ１２３", "ﬁne", "emoji😀here", "cafe\xCC\x81",
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "ééééééééééééééééééééééééééééééééééééééé", "-", ",", "42", "don't", "\xff\xfe", "한국어", "Ünïcödé",
      "über-fast", "x\xC3", "\"quoted\"", "tab\there", "MiXeD123CaSe"};
  std::string text;
  const int n = static_cast<int>(rng() % static_cast<uint64_t>(max_words + 1));
  for (int i = 0; i < n; i++) {
    text += kWords[rng() % std::size(kWords)];
    text += rng() % 5 ? " " : "\n";
  }
  return text;
}

TEST(AnalyzerTest, RawTokensMatchTheTwoPlainAnalyzers) {
  AnalyzerOptions stemmed_stops;
  stemmed_stops.stop_words = true;
  AnalyzerOptions nothing = NoStem();
  std::unique_ptr<Analyzer> bare;
  ASSERT_TRUE(Analyzer::Create(nothing, &bare).ok());
  std::mt19937_64 rng(11);
  for (const AnalyzerOptions& options : {AnalyzerOptions{}, stemmed_stops, nothing}) {
    std::unique_ptr<Analyzer> analyzer;
    ASSERT_TRUE(Analyzer::Create(options, &analyzer).ok());
    for (int i = 0; i < 2000; i++) {
      const std::string text = RandomText(rng, i % 50 == 0 ? 400 : 30);
      std::vector<std::string> raws, terms, want_terms, want_raws;
      analyzer->ForEachRawToken(text, [&](const Analyzer::RawToken& t) {
        raws.emplace_back(t.raw);
        if (!t.term.empty()) terms.emplace_back(t.term);
        // Handed on, not recomputed downstream: a wrong one would put a
        // term in the wrong slot of a term counter or a segment's dictionary.
        ASSERT_EQ(t.raw_hash, TokenHash(t.raw));
        ASSERT_EQ(t.term_hash, t.term.empty() ? 0 : TokenHash(t.term));
      });
      analyzer->Tokenize(text, &want_terms);
      bare->Tokenize(text, &want_raws);
      ASSERT_EQ(terms, want_terms) << text;
      ASSERT_EQ(raws, want_raws) << text;
    }
  }
}

// The stem cache answers with what Snowball would: the same stems (and
// stem hashes) whether a word is stemmed fresh, found in the cache, or
// found after another word took its slot.
TEST(AnalyzerTest, StemCacheAgreesWithSnowball) {
  sb_stemmer* snowball = sb_stemmer_new("english", "UTF_8");
  ASSERT_NE(snowball, nullptr);
  auto stem = [snowball](const std::string& w) {
    const sb_symbol* s =
        sb_stemmer_stem(snowball, reinterpret_cast<const sb_symbol*>(w.data()), static_cast<int>(w.size()));
    const int len = s != nullptr ? sb_stemmer_length(snowball) : 0;
    return len > 0 ? std::string(reinterpret_cast<const char*>(s), static_cast<size_t>(len)) : w;
  };
  std::unique_ptr<Analyzer> cached;
  ASSERT_TRUE(Analyzer::Create(AnalyzerOptions{}, &cached).ok());
  std::mt19937_64 rng(5);
  // Several times more words than the cache has slots, each many times,
  // from a small alphabet so that stems often differ from their words.
  std::vector<std::string> words;
  std::map<std::string, std::string> want;
  for (int i = 0; i < 60000; i++) {
    std::string w;
    for (int n = 3 + static_cast<int>(rng() % 12); n > 0; n--) w += "aeilnorstuy"[rng() % 11];
    static const char* const kEndings[] = {"", "s", "ing", "ed", "ies", "ational", "ness", "ly"};
    w += kEndings[rng() % std::size(kEndings)];
    want[w] = stem(w);
    words.push_back(std::move(w));
  }
  sb_stemmer_delete(snowball);
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < 3 * words.size(); i++) {
      const std::string& w = words[round == 0 ? i % words.size() : rng() % words.size()];
      int seen = 0;
      cached->ForEachRawToken(w, [&](const Analyzer::RawToken& t) {
        seen++;
        ASSERT_EQ(t.term, want[w]) << w;
        ASSERT_EQ(t.term_hash, TokenHash(want[w])) << w;
      });
      ASSERT_EQ(seen, 1) << w;
    }
  }
}

// The sketch's fast path for short ASCII words gives the vectors of its
// general path exactly: the same features summed in the same order.
TEST(HashingEmbedderTest, FastTrigramsAreBitForBit) {
  auto e = NewHashingEmbedder(256);
  std::mt19937_64 rng(13);
  std::vector<std::string> texts = {
      "a", "ab abc abcd", "fourteenletter fifteenletters sixteen-letters", "café naïve über straße",
      "日本語 テキスト 中文", "emoji 🙂 mixed ascii", "x y z x y z", "abcdefghijklmn abcdefghijklmno",
  };
  for (int i = 0; i < 300; i++) texts.push_back(RandomText(rng, 1 + i % 60));
  for (const std::string& text : texts) {
    std::vector<std::vector<float>> fast, general;
    ASSERT_TRUE(e->Embed({text}, &fast).ok());
    g_sketch_general_path_for_test = true;
    ASSERT_TRUE(e->Embed({text}, &general).ok());
    g_sketch_general_path_for_test = false;
    ASSERT_EQ(fast, general) << text;
  }
}

TEST(HashingEmbedderTest, AnalyzeDocVectorIsEmbedBitForBit) {
  auto e = NewHashingEmbedder(256);
  ASSERT_EQ(HashingEmbedderDimension(e.get()), 256);
  AnalyzerOptions options;
  options.stop_words = true;  // stop words still feed the embedder
  std::unique_ptr<Analyzer> analyzer;
  ASSERT_TRUE(Analyzer::Create(options, &analyzer).ok());
  std::mt19937_64 rng(12);
  for (int i = 0; i < 2000; i++) {
    const std::string text = RandomText(rng, i % 50 == 0 ? 600 : 30);
    const std::string value = i % 2 ? text : "[\"" + std::to_string(i) + "\"," + "\"x y\"]";
    AnalyzedDoc with, without;
    ASSERT_TRUE(AnalyzeDoc(*analyzer, e.get(), "k", 1, value, &with).ok());
    ASSERT_TRUE(AnalyzeDoc(*analyzer, nullptr, "k", 1, value, &without).ok());
    EXPECT_EQ(with.terms, without.terms);
    EXPECT_EQ(with.length, without.length);
    // The terms are the analyzer's tokens, counted, in bytewise order.
    std::string text_only;
    ExtractText(value, &text_only);
    std::vector<std::string> tokens;
    analyzer->Tokenize(text_only, &tokens);
    std::map<std::string, uint32_t> counted;
    for (const std::string& t : tokens) counted[t]++;
    const std::vector<std::pair<std::string, uint32_t>> want(counted.begin(), counted.end());
    EXPECT_EQ(with.terms, want) << value;
    EXPECT_EQ(with.length, tokens.size());
    std::string extracted;
    ExtractText(value, &extracted);
    std::vector<std::vector<float>> v;
    ASSERT_TRUE(e->Embed({extracted}, &v).ok());
    const bool any = std::any_of(v[0].begin(), v[0].end(), [](float f) { return f != 0.0f; });
    if (!any) {
      EXPECT_TRUE(with.vector.empty()) << value;
      continue;
    }
    ASSERT_EQ(with.vector.size(), v[0].size());
    EXPECT_EQ(std::memcmp(with.vector.data(), v[0].data(), v[0].size() * sizeof(float)), 0) << value;
  }
  // Another embedder is asked, not sketched.
  EXPECT_EQ(HashingEmbedderDimension(nullptr), 0);
}

// kvstore-hashing-v3's vectors are in every segment written with it: they
// may change only with a new name (kHashingEmbedderName). The hash below is
// of v3's output as first released; a change here needs a name bump.
TEST(HashingEmbedderTest, V3OutputIsPinned) {
  ASSERT_STREQ(kHashingEmbedderName, "kvstore-hashing-v3");
  auto e = NewHashingEmbedder(256);
  std::mt19937_64 rng(7);
  const char* const words[] = {"Hello", "world", "café", "naïve", "Straße", "東京", "search", "indexes", "ΣΟΦΊΑ",
                               "x", "the", "a", "running", "ＡＢＣ", "emoji😀",
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                               "-", ",", "42"};
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the float bits
  for (int t = 0; t < 3000; t++) {
    std::string text;
    const int n = static_cast<int>(rng() % (t % 100 == 0 ? 900 : 40));
    for (int i = 0; i < n; i++) {
      text += words[rng() % std::size(words)];
      text += rng() % 5 ? " " : "\n";
    }
    std::vector<std::vector<float>> v;
    ASSERT_TRUE(e->Embed({text}, &v).ok());
    for (float f : v[0]) {
      uint32_t u;
      std::memcpy(&u, &f, sizeof(u));
      h = (h ^ u) * 1099511628211ull;
    }
  }
  EXPECT_EQ(h, 0xde3afbab4ac1095bull);
}

}  // namespace
}  // namespace kvstore::index
