// Client-supplied vectors (WriteBatch::PutWithVector): the semantic index
// finds a value by the vector its writer gave, through overwrites, deletes,
// flushes, compactions and reopens (WAL replay), against brute-force cosine
// over the same vectors; bad vectors fail the write and leave nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "kvstore/db.h"
#include "kvstore/embedder.h"

namespace kvstore {
namespace {

constexpr int kDim = 16;

std::vector<float> Normalized(std::vector<float> v) {
  double norm = 0;
  for (float x : v) norm += static_cast<double>(x) * x;
  for (float& x : v) x = static_cast<float>(x / std::sqrt(norm));
  return v;
}

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double dot = 0;
  for (size_t i = 0; i < a.size(); i++) dot += static_cast<double>(a[i]) * b[i];
  return dot;  // both normalised
}

class ClientVectorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() / ("kvstore_client_vectors_" + std::to_string(::getpid()) + "_" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    std::filesystem::remove_all(dir_);
    options_.search.enabled = true;
    options_.search.embedder = NewClientVectorsEmbedder(kDim);
    options_.memtable_budget = 128 << 10;  // flushes happen on their own
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
  std::vector<float> RandomVector() {
    std::normal_distribution<float> d;
    std::vector<float> v(kDim);
    for (float& x : v) x = d(rng_);
    return v;
  }
  Status PutWithVector(const std::string& key, const std::string& value, const std::vector<float>& v) {
    WriteBatch b;
    b.PutWithVector(key, value, v);
    return db_->Write(WriteOptions{}, &b);
  }

  std::string dir_;
  Options options_;
  std::unique_ptr<DB> db_;
  std::mt19937_64 rng_{20261128};
};

TEST_F(ClientVectorsTest, AgreesWithBruteForceThroughFlushesCompactionsAndReopens) {
  std::map<std::string, std::vector<float>> live;  // key -> its current vector (normalised)
  std::set<std::string> without_vector;            // live keys written by a plain put
  WriteOptions unsynced;
  unsynced.sync = false;
  for (int round = 0; round < 6; round++) {
    for (int i = 0; i < 800; i++) {
      const std::string key = "doc" + std::to_string(rng_() % 2000);
      const uint64_t what = rng_() % 10;
      Status s;
      if (what < 7) {
        std::vector<float> v = RandomVector();
        WriteBatch b;
        b.PutWithVector(key, "\"words about " + key + "\"", v);
        s = db_->Write(unsynced, &b);
        live[key] = Normalized(v);
        without_vector.erase(key);
      } else if (what < 9) {
        s = db_->Put(unsynced, key, "\"plain words\"");
        live.erase(key);
        without_vector.insert(key);
      } else {
        s = db_->Delete(unsynced, key);
        live.erase(key);
        without_vector.erase(key);
      }
      ASSERT_TRUE(s.ok()) << s.ToString();
    }
    if (round == 1) {
      ASSERT_TRUE(db_->Flush().ok());
    }
    if (round == 3) {
      ASSERT_TRUE(db_->CompactRange("", "").ok());
    }
    if (round % 2 == 0) Reopen();  // the last writes come back from the WAL

    size_t found = 0, expected = 0;
    for (int q = 0; q < 20; q++) {
      const std::vector<float> query = Normalized(RandomVector());
      std::vector<std::pair<double, std::string>> truth;
      for (const auto& [key, v] : live) truth.emplace_back(Cosine(query, v), key);
      std::sort(truth.rbegin(), truth.rend());
      truth.resize(std::min<size_t>(truth.size(), 10));
      SemanticOptions so;
      so.k = 10;
      so.threshold = -1;
      std::vector<SearchHit> hits;
      Status s = db_->SemanticSearchByVector(query, so, &hits);
      ASSERT_TRUE(s.ok()) << s.ToString();
      ASSERT_LE(hits.size(), 10u);
      std::set<std::string> got;
      for (const SearchHit& h : hits) {
        ASSERT_TRUE(live.count(h.key)) << h.key << " is deleted, or was overwritten without a vector";
        // Within 2^-11 of the float cosine: indexes keep vectors as binary16.
        EXPECT_NEAR(h.score, Cosine(query, live[h.key]), 0x1p-11 + 1e-6) << h.key;
        got.insert(h.key);
      }
      for (const auto& [score, key] : truth) found += got.count(key);
      expected += truth.size();
    }
    EXPECT_GE(static_cast<double>(found) / static_cast<double>(expected), 0.95) << "round " << round;
  }
  // Values without vectors are still found by the other indexes.
  ASSERT_FALSE(without_vector.empty());
  std::vector<SearchHit> hits;
  FullTextOptions fo;
  fo.limit = 10000;
  ASSERT_TRUE(db_->FullTextSearch("plain", fo, &hits).ok());
  EXPECT_EQ(hits.size(), without_vector.size());
}

TEST_F(ClientVectorsTest, TextSearchIsNotSupportedWithoutAnEmbedder) {
  ASSERT_TRUE(PutWithVector("k", "\"some text\"", RandomVector()).ok());
  std::vector<SearchHit> hits;
  Status s = db_->SemanticSearch("some text", SemanticOptions{}, &hits);
  EXPECT_TRUE(s.IsNotSupported()) << s.ToString();
  // A plain put is written, flushed and compacted with no vector.
  ASSERT_TRUE(db_->Put(WriteOptions{}, "plain", "\"more text\"").ok());
  ASSERT_TRUE(db_->Flush().ok());
  ASSERT_TRUE(db_->CompactRange("", "").ok());
  SemanticOptions so;
  so.threshold = -1;
  ASSERT_TRUE(db_->SemanticSearchByVector(RandomVector(), so, &hits).ok());
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].key, "k");
}

TEST_F(ClientVectorsTest, BadVectorsFailTheWriteAndLeaveNothing) {
  auto expect_rejected = [&](std::vector<float> v, const char* why) {
    WriteBatch b;
    b.Put("other", "\"x\"");
    b.PutWithVector("bad", "\"x\"", v);
    Status s = db_->Write(WriteOptions{}, &b);
    EXPECT_TRUE(s.IsInvalidArgument()) << why << ": " << s.ToString();
    std::string value;
    EXPECT_TRUE(db_->Get(ReadOptions{}, "other", &value).IsNotFound()) << why;
  };
  expect_rejected(std::vector<float>(kDim + 1, 1.0f), "wrong dimension");
  expect_rejected({}, "empty");
  expect_rejected(std::vector<float>(kDim, 0.0f), "all zeros");
  std::vector<float> nan(kDim, 1.0f);
  nan[3] = std::nanf("");
  expect_rejected(nan, "NaN");
  std::vector<float> inf(kDim, 1.0f);
  inf[0] = INFINITY;
  expect_rejected(inf, "infinity");

  // A store without a semantic index has nowhere to put a vector.
  options_.search.semantic = false;
  Reopen();
  expect_rejected(RandomVector(), "no semantic index");
  options_.search.enabled = false;
  Reopen();
  expect_rejected(RandomVector(), "no search");
}

// With an embedder that embeds text (the built-in one), a put's vector
// replaces the embedder's for that value; other values keep theirs.
TEST_F(ClientVectorsTest, AVectorOverridesTheEmbedder) {
  options_.search.embedder = nullptr;  // the built-in hashing embedder, 256 dimensions
  Reopen();
  std::vector<float> v(256, 0.0f);
  v[7] = 1.0f;
  WriteBatch b;
  b.PutWithVector("given", "\"apple banana cherry\"", v);
  b.Put("embedded", "\"apple banana cherry\"");
  ASSERT_TRUE(db_->Write(WriteOptions{}, &b).ok());
  for (int pass = 0; pass < 2; pass++) {
    SemanticOptions so;
    so.threshold = 0.99;
    std::vector<SearchHit> hits;
    ASSERT_TRUE(db_->SemanticSearchByVector(v, so, &hits).ok());
    ASSERT_EQ(hits.size(), 1u) << "pass " << pass;
    EXPECT_EQ(hits[0].key, "given");
    so.threshold = 0.5;
    ASSERT_TRUE(db_->SemanticSearch("apple banana cherry", so, &hits).ok());
    ASSERT_EQ(hits.size(), 1u) << "pass " << pass;
    EXPECT_EQ(hits[0].key, "embedded");
    ASSERT_TRUE(db_->Flush().ok());  // the second pass reads the segment
  }
  std::vector<float> short_vector(kDim, 1.0f);
  WriteBatch wrong;
  wrong.PutWithVector("k", "\"x\"", short_vector);
  EXPECT_TRUE(db_->Write(WriteOptions{}, &wrong).IsInvalidArgument());
}

}  // namespace
}  // namespace kvstore
