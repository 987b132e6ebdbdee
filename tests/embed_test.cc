// Semantic search through an HTTP embedder whose service goes away: writes
// go on and are found by exact and full-text search at once; their vectors
// wait in the backlog (DBStats::index_embedding_backlog) and arrive once the
// service is back, whether the docs are still in the memtable or were
// flushed and compacted meanwhile, and the backlog survives a reopen.
// The service is FakeEmbeddingServer (index/), on a free 127.0.0.1 port.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "index/analyzer.h"
#include "index/fake_embedding_server.h"
#include "kvstore/db.h"
#include "kvstore/embedder.h"

namespace kvstore {
namespace {

constexpr int kDim = 64;

const char* const kWords[] = {"apple",  "banana", "cherry", "delta",  "echo",   "forest", "garden", "harbor",
                              "island", "jungle", "kettle", "lemon",  "meadow", "nectar", "ocean",  "pepper",
                              "quartz", "river",  "sunset", "tiger",  "umbra",  "violet", "willow", "zebra"};
constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);

std::string Key(int i) { return "doc:" + std::to_string(1000 + i); }
std::string Text(int i) {
  return std::string(kWords[i % kNumWords]) + " " + kWords[(i * 7 + 3) % kNumWords] + " " +
         kWords[(i * 13 + 5) % kNumWords] + " item" + std::to_string(i);
}

class EmbedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() / ("kvstore_embed_" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(server_.Start().ok());
    HttpEmbedderOptions http;
    http.api = HttpEmbedderApi::kOllama;
    http.url = server_.url();
    http.model = "fake";
    http.dimension = kDim;
    http.connect_timeout_ms = 500;
    http.read_timeout_ms = 5000;
    http.retries = 0;  // the DB's thread retries, with its own backoff
    ASSERT_TRUE(NewHttpEmbedder(http, &embedder_).ok());
    options_.search.enabled = true;
    options_.search.embedder = embedder_;
    options_.memtable_budget = 64 << 10;
    Reopen();
  }
  void TearDown() override {
    db_.reset();
    options_.search.embedder.reset();
    embedder_.reset();  // its kept-alive connections, which the server would wait for
    server_.Stop();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    db_.reset();
    Status s = DB::Open(options_, dir_, &db_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  void Put(int i) {
    Status s = db_->Put(WriteOptions{}, Key(i), Text(i));
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // The vector the service gives Text(i): the hashing embedder's.
  std::vector<float> Vector(int i) {
    std::vector<std::vector<float>> v;
    EXPECT_TRUE(reference_->Embed({Text(i)}, &v).ok());
    return v.at(0);
  }

  bool FoundSemantically(int i) {
    SemanticOptions o;
    o.k = 3;
    std::vector<SearchHit> hits;
    Status s = db_->SemanticSearchByVector(Vector(i), o, &hits);
    EXPECT_TRUE(s.ok()) << s.ToString();
    for (const SearchHit& h : hits) {
      if (h.key == Key(i)) return h.score > 0.999;
    }
    return false;
  }

  void ExpectFoundByValueAndText(int i) {
    std::vector<SearchHit> hits;
    ASSERT_TRUE(db_->SearchByValue(Text(i), ValueSearchOptions{}, &hits).ok());
    ASSERT_EQ(hits.size(), 1u) << Key(i);
    EXPECT_EQ(hits[0].key, Key(i));
    ASSERT_TRUE(db_->FullTextSearch("item" + std::to_string(i), FullTextOptions{}, &hits).ok());
    ASSERT_EQ(hits.size(), 1u) << Key(i);
    EXPECT_EQ(hits[0].key, Key(i));
  }

  uint64_t Backlog() { return db_->GetStats().index_embedding_backlog; }

  // Polls the stats until nothing waits for a vector.
  void WaitForEmptyBacklog() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (Backlog() != 0) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline)
          << "backlog stuck at " << Backlog() << "; last error: " << db_->GetStats().index_embedding_last_error;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  std::string dir_;
  index::FakeEmbeddingServer server_{kDim};
  std::shared_ptr<Embedder> embedder_;
  std::shared_ptr<Embedder> reference_ = NewHashingEmbedder(kDim);
  Options options_;
  std::unique_ptr<DB> db_;
};

TEST_F(EmbedTest, ServiceDownDuringALoadThenBack) {
  // Up for the first part of the load.
  for (int i = 0; i < 100; i++) Put(i);
  WaitForEmptyBacklog();
  for (int i = 0; i < 100; i += 7) {
    EXPECT_TRUE(FoundSemantically(i)) << i;
  }

  // Down for the rest, across flushes and a compaction.
  server_.Stop();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 100; i < 400; i++) {
    Put(i);
    if (i == 200) {
      ASSERT_TRUE(db_->Flush().ok());
    }
    if (i == 300) {
      ASSERT_TRUE(db_->CompactRange("", "").ok());
    }
  }
  const auto load = std::chrono::steady_clock::now() - start;
  EXPECT_LT(load, std::chrono::seconds(20));
  for (int i = 0; i < 400; i += 3) ExpectFoundByValueAndText(i);
  // The docs written while the service was down wait for their vectors.
  EXPECT_EQ(Backlog(), 300u);
  for (int i = 100; i < 400; i += 9) {
    EXPECT_FALSE(FoundSemantically(i)) << i;
  }
  for (int i = 0; i < 100; i += 9) {
    EXPECT_TRUE(FoundSemantically(i)) << i;
  }
  // A text query needs the service.
  std::vector<SearchHit> hits;
  EXPECT_FALSE(db_->SemanticSearch(Text(1), SemanticOptions{}, &hits).ok());
  DBStats st = db_->GetStats();
  EXPECT_GT(st.index_embedding_errors, 0u);
  EXPECT_FALSE(st.index_embedding_last_error.empty());
  std::string property;
  ASSERT_TRUE(db_->GetProperty("kvstore.index_embedding_backlog", &property));
  EXPECT_EQ(property, "300");

  // Back: the backlog drains, in the memtable and in the segments alike.
  ASSERT_TRUE(server_.Start().ok());
  WaitForEmptyBacklog();
  for (int i = 0; i < 400; i++) {
    EXPECT_TRUE(FoundSemantically(i)) << i;
  }
  st = db_->GetStats();
  EXPECT_GE(st.index_docs_embedded, 300u);
  EXPECT_GT(st.index_vector_rewrites, 0u);
  ASSERT_TRUE(db_->SemanticSearch(Text(250), SemanticOptions{}, &hits).ok());
  ASSERT_FALSE(hits.empty());
  EXPECT_EQ(hits[0].key, Key(250));

  // The vectors are carried through flushes, compactions and a reopen.
  ASSERT_TRUE(db_->CompactRange("", "").ok());
  for (int i = 0; i < 400; i += 5) {
    EXPECT_TRUE(FoundSemantically(i)) << i;
  }
  Reopen();
  EXPECT_EQ(Backlog(), 0u);
  EXPECT_EQ(db_->GetStats().index_docs_embedded, 0u);
  for (int i = 0; i < 400; i++) {
    EXPECT_TRUE(FoundSemantically(i)) << i;
  }
}

TEST_F(EmbedTest, BacklogSurvivesAReopen) {
  server_.Stop();
  for (int i = 0; i < 150; i++) {
    Put(i);
    if (i == 60) {
      ASSERT_TRUE(db_->Flush().ok());
    }
    if (i == 100) {
      ASSERT_TRUE(db_->CompactRange("", "").ok());
    }
  }
  // An overwrite and a delete: neither old version is worth a vector.
  ASSERT_TRUE(db_->Put(WriteOptions{}, Key(5), "replaced by something else entirely").ok());
  ASSERT_TRUE(db_->Delete(WriteOptions{}, Key(6)).ok());
  EXPECT_EQ(Backlog(), 151u);
  // Closed with the service still down: the WAL replay and the segments
  // refill the backlog.
  Reopen();
  EXPECT_EQ(Backlog(), 151u);
  for (int i = 0; i < 150; i += 4) {
    if (i != 5 && i != 6) ExpectFoundByValueAndText(i);
  }

  ASSERT_TRUE(server_.Start().ok());
  WaitForEmptyBacklog();
  for (int i = 0; i < 150; i++) {
    if (i == 5 || i == 6) {
      EXPECT_FALSE(FoundSemantically(i)) << i;
    } else {
      EXPECT_TRUE(FoundSemantically(i)) << i;
    }
  }
  // Only the live versions were sent.
  EXPECT_LE(server_.texts(), 149u);
  // Vectors in the memtable are not durable: its WAL replay embeds them
  // again. Those in segments stay.
  Reopen();
  EXPECT_GT(Backlog(), 0u);
  WaitForEmptyBacklog();
  ASSERT_TRUE(db_->Flush().ok());
  Reopen();
  EXPECT_LE(Backlog(), 2u);  // at most the two dead versions, found again and dropped
  WaitForEmptyBacklog();
  const uint64_t sent = server_.texts();
  for (int i = 7; i < 150; i += 3) {
    EXPECT_TRUE(FoundSemantically(i)) << i;
  }
  EXPECT_EQ(server_.texts(), sent);
}

TEST_F(EmbedTest, WritesDoNotWaitForASlowService) {
  server_.SetDelayMs(3000);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; i++) Put(i);
  ASSERT_TRUE(db_->Flush().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2500));
  for (int i = 0; i < 200; i += 11) ExpectFoundByValueAndText(i);
  server_.SetDelayMs(0);
  WaitForEmptyBacklog();
  for (int i = 0; i < 200; i += 11) {
    EXPECT_TRUE(FoundSemantically(i)) << i;
  }
}

}  // namespace
}  // namespace kvstore
