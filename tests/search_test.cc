// The search indexes against brute-force references over a model of the
// store: random puts (text, JSON strings, JSON objects, bytes), overwrites,
// deletes and batches, with flushes, compactions and reopens in between.
// Exact and full-text results must be the same key sets as the reference;
// semantic top-10 must reach recall 0.95 against brute-force cosine over the
// same embedder's vectors. Seeded: KVSTORE_SEED=<n> reruns one sequence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "index/analyzer.h"
#include "kvstore/db.h"
#include "kvstore/embedder.h"

namespace kvstore {
namespace {

// Indexes keep vectors as binary16 (docs/format/index.md): each component
// within 2^-11 of the float, so a unit vector's cosine with itself is
// within 2^-11 of 1.
constexpr double kSelfCosineTolerance = 0x1p-11 + 1e-6;

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : fallback;
}

const char* const kWords[] = {
    "apple",  "banana", "cherry", "delta",   "echo",    "forest", "garden", "harbor", "island", "jungle",
    "kettle", "lemon",  "meadow", "nectar",  "ocean",   "pepper", "quartz", "river",  "sunset", "tiger",
    "umbra",  "violet", "willow", "xylem",   "yellow",  "zebra",  "running", "runner", "runs",  "café",
    "naïve",  "Straße", "東京",   "data",    "storage", "engine", "search",  "index",  "vector", "query"};
constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);

class SearchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() / ("kvstore_search_" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir_);
    options_.search.enabled = true;
    options_.memtable_budget = 256 << 10;  // flushes happen on their own
    ASSERT_TRUE(index::Analyzer::Create({}, &analyzer_).ok());
    embedder_ = NewHashingEmbedder();
    options_.search.embedder = embedder_;
    Reopen();
  }
  void TearDown() override {
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    db_.reset();
    Status s = DB::Open(options_, dir_, &db_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::set<std::string> Tokens(std::string_view value) const {
    std::string text;
    index::ExtractText(value, &text);
    std::vector<std::string> tokens;
    analyzer_->Tokenize(text, &tokens);
    return {tokens.begin(), tokens.end()};
  }
  std::vector<float> Embed(std::string_view value) const {
    std::string text;
    index::ExtractText(value, &text);
    std::vector<std::vector<float>> v;
    EXPECT_TRUE(embedder_->Embed({text}, &v).ok());
    return v.at(0);
  }

  std::string dir_;
  Options options_;
  std::unique_ptr<DB> db_;
  std::unique_ptr<index::Analyzer> analyzer_;
  std::shared_ptr<Embedder> embedder_;
};

TEST_F(SearchTest, OffByDefault) {
  db_.reset();
  Options plain;
  std::unique_ptr<DB> db;
  ASSERT_TRUE(DB::Open(plain, dir_ + "_plain", &db).ok());
  std::vector<SearchHit> hits;
  EXPECT_TRUE(db->SearchByValue("x", {}, &hits).IsNotSupported());
  EXPECT_TRUE(db->FullTextSearch("x", {}, &hits).IsNotSupported());
  EXPECT_TRUE(db->SemanticSearch("x", {}, &hits).IsNotSupported());
  db.reset();
  std::filesystem::remove_all(dir_ + "_plain");
}

TEST_F(SearchTest, FindsWhatWasWrittenAndForgetsWhatWasOverwritten) {
  WriteOptions wo;
  ASSERT_TRUE(db_->Put(wo, "a", "\"the quick brown fox\"").ok());
  ASSERT_TRUE(db_->Put(wo, "b", "{\"title\":\"lazy dogs sleep\",\"n\":3}").ok());
  ASSERT_TRUE(db_->Put(wo, "c", "the quick brown fox").ok());
  std::vector<SearchHit> hits;
  ASSERT_TRUE(db_->SearchByValue("\"the quick brown fox\"", {}, &hits).ok());
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].key, "a");

  ASSERT_TRUE(db_->FullTextSearch("quick foxes", {}, &hits).ok());  // stemmed
  std::set<std::string> keys;
  for (const auto& h : hits) keys.insert(h.key);
  EXPECT_EQ(keys, (std::set<std::string>{"a", "c"}));
  ASSERT_TRUE(db_->FullTextSearch("dog", {}, &hits).ok());
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].key, "b");

  const Snapshot* before = db_->GetSnapshot();
  ASSERT_TRUE(db_->Put(wo, "a", "\"slow green turtle\"").ok());
  ASSERT_TRUE(db_->Delete(wo, "c").ok());
  ASSERT_TRUE(db_->Flush().ok());
  ASSERT_TRUE(db_->FullTextSearch("quick", {}, &hits).ok());
  EXPECT_TRUE(hits.empty());
  FullTextOptions at_snapshot;
  at_snapshot.snapshot = before;
  at_snapshot.include_values = true;
  ASSERT_TRUE(db_->FullTextSearch("quick", at_snapshot, &hits).ok());
  ASSERT_EQ(hits.size(), 2u);
  for (const auto& h : hits) ASSERT_TRUE(h.value.has_value());
  db_->ReleaseSnapshot(before);

  SemanticOptions so;
  so.k = 1;
  so.threshold = -1;
  ASSERT_TRUE(db_->SemanticSearch("green turtles", so, &hits).ok());
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].key, "a");
  EXPECT_GT(hits[0].score, 0.3);

  std::vector<float> wrong(3, 1.0f);
  EXPECT_TRUE(db_->SemanticSearchByVector(wrong, so, &hits).IsInvalidArgument());
  ASSERT_TRUE(db_->SemanticSearchByVector(Embed("\"slow green turtle\""), so, &hits).ok());
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].key, "a");
  EXPECT_NEAR(hits[0].score, 1.0, kSelfCosineTolerance);
}

// Batches big enough for the writer to share their analysis with the
// helper thread, from several writers at once: every doc lands in the
// indexes with its own analysis (its words, its value, its vector) and its
// own sequence, so each is found by each search, before and after a flush.
TEST_F(SearchTest, BigBatchesFromManyWritersAreIndexedDocByDoc) {
  constexpr int kWriters = 4, kBatches = 6, kPerBatch = 100;
  auto value = [](int w, int b, int i) {
    return "\"w" + std::to_string(w) + "b" + std::to_string(b) + "i" + std::to_string(i) + " " +
           kWords[(w * 7 + b * 3 + i) % kNumWords] + "\"";
  };
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; w++) {
    writers.emplace_back([&, w] {
      for (int b = 0; b < kBatches; b++) {
        WriteBatch batch;
        for (int i = 0; i < kPerBatch; i++) {
          const std::string key = "k" + std::to_string(w) + "_" + std::to_string(b) + "_" + std::to_string(i);
          batch.Put(key, value(w, b, i));
          if (i % 10 == 9) batch.Delete(key);  // positions past deletes must still line up
        }
        EXPECT_TRUE(db_->Write(WriteOptions(), &batch).ok());
      }
    });
  }
  for (auto& t : writers) t.join();
  for (int pass = 0; pass < 2; pass++) {
    for (int w = 0; w < kWriters; w++) {
      for (int b = 0; b < kBatches; b++) {
        for (int i = 0; i < kPerBatch; i += 7) {
          const std::string key = "k" + std::to_string(w) + "_" + std::to_string(b) + "_" + std::to_string(i);
          const bool live = i % 10 != 9;
          std::vector<SearchHit> hits;
          ASSERT_TRUE(db_->SearchByValue(value(w, b, i), {}, &hits).ok());
          ASSERT_EQ(hits.size(), live ? 1u : 0u) << key;
          if (live) {
            EXPECT_EQ(hits[0].key, key);
          }
          const std::string word = "w" + std::to_string(w) + "b" + std::to_string(b) + "i" + std::to_string(i);
          ASSERT_TRUE(db_->FullTextSearch(word, {}, &hits).ok());
          ASSERT_EQ(hits.size(), live ? 1u : 0u) << key;
          if (!live) continue;
          SemanticOptions so;
          so.k = 1;
          so.threshold = -1;
          ASSERT_TRUE(db_->SemanticSearchByVector(Embed(value(w, b, i)), so, &hits).ok());
          ASSERT_EQ(hits.size(), 1u);
          EXPECT_EQ(hits[0].key, key);
          EXPECT_NEAR(hits[0].score, 1.0, kSelfCosineTolerance);
        }
      }
    }
    ASSERT_TRUE(db_->Flush().ok());
  }
}

TEST_F(SearchTest, PrefixesLimitWhatIsIndexed) {
  options_.search.prefixes = {"doc:"};
  Reopen();
  ASSERT_TRUE(db_->Put({}, "doc:1", "shared words").ok());
  ASSERT_TRUE(db_->Put({}, "other:1", "shared words").ok());
  std::vector<SearchHit> hits;
  ASSERT_TRUE(db_->FullTextSearch("shared", {}, &hits).ok());
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].key, "doc:1");
  ASSERT_TRUE(db_->SearchByValue("shared words", {}, &hits).ok());
  ASSERT_EQ(hits.size(), 1u);
}

TEST_F(SearchTest, SegmentsSurviveReopenAndConfigurationChangesRebuildThem) {
  for (int i = 0; i < 500; i++) {
    ASSERT_TRUE(db_->Put({}, "k" + std::to_string(i), "word" + std::to_string(i % 7) + " common").ok());
  }
  ASSERT_TRUE(db_->Flush().ok());
  DBStats st = db_->GetStats();
  EXPECT_GE(st.index_segments_built, 1u);
  Reopen();
  st = db_->GetStats();
  EXPECT_EQ(st.index_segments_built, 0u) << "open rebuilt segments already on disk";
  std::vector<SearchHit> hits;
  FullTextOptions fo;
  fo.limit = 1000;
  ASSERT_TRUE(db_->FullTextSearch("word3", fo, &hits).ok());
  EXPECT_EQ(hits.size(), 71u);

  // A table whose segment is lost, or built under another configuration,
  // gets a new one at open.
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    if (entry.path().extension() == ".idx") std::filesystem::remove(entry.path());
  }
  options_.search.stemmer_language = "";
  Reopen();
  EXPECT_GE(db_->GetStats().index_segments_built, 1u);
  ASSERT_TRUE(db_->FullTextSearch("word3", fo, &hits).ok());
  EXPECT_EQ(hits.size(), 71u);
  ASSERT_TRUE(db_->Put({}, "x", "running").ok());
  ASSERT_TRUE(db_->FullTextSearch("run", fo, &hits).ok());
  EXPECT_TRUE(hits.empty()) << "stemming is off now";
}

TEST_F(SearchTest, AgreesWithBruteForce) {
  const uint64_t seed = EnvOr("KVSTORE_SEED", 20261128);
  SCOPED_TRACE("KVSTORE_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::map<std::string, std::string> model;
  // Zipf-like word choice: a few words are common, most are rare.
  auto word = [&]() -> std::string {
    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    size_t i = static_cast<size_t>(std::pow(u, 2.5) * kNumWords);
    return kWords[std::min(i, kNumWords - 1)];
  };
  auto text = [&] {
    std::string t;
    int n = 3 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n; i++) {
      if (i > 0) t += rng() % 5 == 0 ? ", " : " ";
      std::string w = word();
      if (rng() % 7 == 0 && !w.empty() && w[0] >= 'a' && w[0] <= 'z') w[0] = static_cast<char>(w[0] - 32);
      t += w;
    }
    return t;
  };
  auto value = [&]() -> std::string {
    switch (rng() % 5) {
      case 0: return "\"" + text() + "\"";
      case 1: return "{\"title\":\"" + text() + "\",\"tags\":[\"" + word() + "\",\"" + word() + "\"],\"n\":7}";
      case 2: return "exact" + std::to_string(rng() % 20);  // repeated values for exact search
      default: return text();
    }
  };

  // The most index segments any check searched: whether the last round's
  // writes fill a memtable is a matter of a few bytes of accounting, so the
  // count at the end alone says little.
  uint64_t most_segments = 0;
  auto check = [&](const char* when) {
    SCOPED_TRACE(when);
    most_segments = std::max(most_segments, db_->GetStats().index_segments);
    // Exact.
    for (int i = 0; i < 20; i++) {
      const std::string target = "exact" + std::to_string(i);
      std::set<std::string> want;
      for (const auto& [k, v] : model) {
        if (v == target) want.insert(k);
      }
      std::vector<SearchHit> hits;
      ASSERT_TRUE(db_->SearchByValue(target, {}, &hits).ok());
      std::set<std::string> got;
      for (const auto& h : hits) got.insert(h.key);
      ASSERT_EQ(got.size(), hits.size()) << "duplicate keys";
      ASSERT_EQ(got, want) << target;
    }
    // Full text, all and any terms.
    for (int q = 0; q < 30; q++) {
      std::string query = word() + " " + word();
      std::set<std::string> qterms = Tokens(query);
      for (MatchMode mode : {MatchMode::kAllTerms, MatchMode::kAnyTerm}) {
        std::set<std::string> want;
        for (const auto& [k, v] : model) {
          std::set<std::string> doc = Tokens(v);
          size_t matched = 0;
          for (const auto& t : qterms) matched += doc.count(t);
          if (mode == MatchMode::kAllTerms ? matched == qterms.size() && !qterms.empty() : matched > 0) {
            want.insert(k);
          }
        }
        FullTextOptions fo;
        fo.limit = 100000;
        fo.mode = mode;
        std::vector<SearchHit> hits;
        ASSERT_TRUE(db_->FullTextSearch(query, fo, &hits).ok());
        std::set<std::string> got;
        for (size_t i = 0; i < hits.size(); i++) {
          got.insert(hits[i].key);
          if (i > 0) {
            ASSERT_GE(hits[i - 1].score, hits[i].score) << "not best first";
          }
        }
        ASSERT_EQ(got.size(), hits.size()) << "duplicate keys";
        ASSERT_EQ(got, want) << query << (mode == MatchMode::kAllTerms ? " (all)" : " (any)");
      }
    }
    // Semantic: recall@10 against brute-force cosine.
    std::vector<std::pair<std::string, std::vector<float>>> vectors;
    for (const auto& [k, v] : model) vectors.emplace_back(k, Embed(v));
    double recall_sum = 0;
    const int queries = 20;
    for (int q = 0; q < queries; q++) {
      std::vector<float> qv = Embed(text());
      std::vector<std::pair<double, std::string>> scored;
      for (const auto& [k, v] : vectors) {
        double dot = 0;
        for (size_t i = 0; i < v.size(); i++) dot += static_cast<double>(qv[i]) * v[i];
        scored.emplace_back(dot, k);
      }
      std::sort(scored.begin(), scored.end(), std::greater<>());
      SemanticOptions so;
      so.k = 10;
      so.threshold = -1;
      std::vector<SearchHit> hits;
      ASSERT_TRUE(db_->SemanticSearchByVector(qv, so, &hits).ok());
      const size_t n = std::min<size_t>(10, scored.size());
      ASSERT_EQ(hits.size(), n);
      // Ties at the 10th score may pick either key: count a hit whose
      // brute-force score reaches the 10th (by key: the index's own score
      // is that of its binary16 copy of the vector, within 2^-11).
      const double tenth = n > 0 ? scored[n - 1].first : 0;
      std::map<std::string, double> truth;
      for (const auto& [dot, k] : scored) truth[k] = dot;
      size_t found = 0;
      for (const auto& h : hits) {
        ASSERT_TRUE(model.count(h.key)) << "a deleted key came back: " << h.key;
        if (truth[h.key] >= tenth - 1e-5) found++;
      }
      recall_sum += n > 0 ? static_cast<double>(std::min(found, n)) / n : 1.0;
    }
    EXPECT_GE(recall_sum / queries, 0.95);
  };

  const int rounds = 6;
  for (int round = 0; round < rounds; round++) {
    for (int i = 0; i < 1500; i++) {
      const std::string key = "k" + std::to_string(rng() % 3000);
      const int dice = static_cast<int>(rng() % 10);
      if (dice < 7) {
        std::string v = value();
        ASSERT_TRUE(db_->Put(WriteOptions{false}, key, v).ok());
        model[key] = v;
      } else if (dice < 9) {
        ASSERT_TRUE(db_->Delete(WriteOptions{false}, key).ok());
        model.erase(key);
      } else {
        WriteBatch batch;
        for (int j = 0; j < 5; j++) {
          const std::string k = "k" + std::to_string(rng() % 3000);
          std::string v = value();
          batch.Put(k, v);
          model[k] = v;
        }
        ASSERT_TRUE(db_->Write(WriteOptions{false}, &batch).ok());
      }
    }
    check("after writes");
    if (round % 3 == 1) {
      ASSERT_TRUE(db_->CompactRange("", "").ok());
      check("after a full compaction");
    }
    if (round % 2 == 1) {
      Reopen();
      check("after reopen");
    }
  }
  EXPECT_GT(most_segments, 1u);
}

}  // namespace
}  // namespace kvstore
