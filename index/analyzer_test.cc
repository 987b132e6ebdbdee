#include "index/analyzer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "index/embedder.h"

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

}  // namespace
}  // namespace kvstore::index
