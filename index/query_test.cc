#include "index/query.h"

#include <gtest/gtest.h>

#include <map>

#include "index/embedder.h"
#include "index/index_test_util.h"
#include "index/mem_index.h"

namespace kvstore::index {
namespace {

using namespace testutil;

// A store's history: versions (puts with values, deletes) spread over
// several sources the way flushes spread them: oldest segment first, the
// memtable last.
class QueryTest : public ::testing::Test {
 protected:
  struct VersionRec {
    uint64_t seq;
    bool put;
    std::string value;
  };

  void SetUp() override {
    embedder_ = NewHashingEmbedder(64);
    config_.embedder_name = embedder_->name();
    config_.dimension = 64;
    ASSERT_TRUE(Analyzer::Create(config_.analyzer, &analyzer_).ok());
  }

  // Source sizes: e.g. {2500, 600, 300} segments then a memtable of mem docs.
  void Build(const std::vector<size_t>& segment_docs, size_t mem_docs, size_t keys, uint64_t seed) {
    std::mt19937_64 rng(seed);
    uint64_t seq = 1;
    auto make = [&](size_t n, std::vector<AnalyzedDoc>* docs) {
      for (size_t i = 0; i < n; i++) {
        char key[32];
        std::snprintf(key, sizeof(key), "key%05d", static_cast<int>(rng() % keys));
        if (rng() % 10 == 0) {
          history_[key].push_back({seq++, false, ""});  // a delete
          continue;
        }
        std::string value = RandomValue(rng);
        AnalyzedDoc d;
        ASSERT_TRUE(AnalyzeDoc(*analyzer_, embedder_.get(), key, seq, value, &d).ok());
        RoundToHalfPrecision(&d.vector);  // as the sources hold it: brute force over the same vectors
        history_[key].push_back({seq++, true, value});
        all_docs_.push_back(d);
        docs->push_back(std::move(d));
      }
    };
    for (size_t n : segment_docs) {
      std::vector<AnalyzedDoc> docs;
      make(n, &docs);
      SegmentWriter writer(config_);
      for (auto& d : docs) writer.Add(std::move(d));
      std::string contents;
      ASSERT_TRUE(writer.Finish(&contents).ok());
      std::shared_ptr<Segment> segment;
      ASSERT_TRUE(Segment::OpenContents(std::move(contents), "seg", &segment).ok());
      segments_.push_back(segment);
      sources_.push_back(segment.get());
    }
    mem_ = std::make_unique<MemIndex>(config_);
    std::vector<AnalyzedDoc> docs;
    make(mem_docs, &docs);
    for (auto& d : docs) mem_->Add(std::move(d));
    sources_.push_back(mem_.get());
    last_seq_ = seq - 1;
  }

  // The newest version of key visible at max_seq, or null.
  const VersionRec* Newest(std::string_view key, uint64_t max_seq) const {
    auto it = history_.find(std::string(key));
    if (it == history_.end()) return nullptr;
    const VersionRec* best = nullptr;
    for (const auto& v : it->second) {
      if (v.seq <= max_seq && (best == nullptr || v.seq > best->seq)) best = &v;
    }
    return best;
  }

  LiveCheck Live(uint64_t max_seq, int* calls = nullptr) const {
    return [this, max_seq, calls](std::string_view key, uint64_t seq, bool* live, std::string* value) {
      if (calls) ++*calls;
      const VersionRec* v = Newest(key, max_seq);
      *live = v != nullptr && v->put && v->seq == seq;
      if (*live && value != nullptr) *value = v->value;
      return Status::OK();
    };
  }

  // The live docs at max_seq: one per key at most.
  std::vector<const AnalyzedDoc*> LiveDocs(uint64_t max_seq) const {
    std::vector<const AnalyzedDoc*> out;
    for (const auto& d : all_docs_) {
      const VersionRec* v = Newest(d.key, max_seq);
      if (v != nullptr && v->put && v->seq == d.seq) out.push_back(&d);
    }
    return out;
  }

  IndexConfig config_;
  std::unique_ptr<Analyzer> analyzer_;
  std::shared_ptr<Embedder> embedder_;
  std::map<std::string, std::vector<VersionRec>> history_;
  std::vector<AnalyzedDoc> all_docs_;
  std::vector<std::shared_ptr<Segment>> segments_;
  std::unique_ptr<MemIndex> mem_;
  std::vector<const IndexSource*> sources_;
  uint64_t last_seq_ = 0;
};

TEST_F(QueryTest, ExactMatchesReference) {
  Build({400, 300}, 200, 300, 1);
  std::mt19937_64 rng(2);
  for (int q = 0; q < 50; q++) {
    const uint64_t max_seq = q % 2 ? last_seq_ : rng() % (last_seq_ + 1);
    std::string value = q < 20 ? std::to_string(q) : all_docs_[rng() % all_docs_.size()].key;  // numbers repeat
    if (q >= 30) {
      const auto& key = all_docs_[rng() % all_docs_.size()].key;
      for (const auto& v : history_[key]) {
        if (v.put) value = v.value;
      }
    }
    std::vector<Hit> hits;
    ASSERT_TRUE(ExactSearch(sources_, value, max_seq, 1000, true, Live(max_seq), &hits).ok());
    std::vector<std::string> want;
    for (const auto& [key, versions] : history_) {
      const VersionRec* v = Newest(key, max_seq);
      if (v != nullptr && v->put && v->value == value) want.push_back(key);
    }
    std::vector<std::string> got;
    for (const auto& h : hits) {
      got.push_back(h.key);
      EXPECT_TRUE(h.has_value);
      EXPECT_EQ(h.value, value);
    }
    EXPECT_EQ(got, want) << value;
    if (want.size() > 2) {
      ASSERT_TRUE(ExactSearch(sources_, value, max_seq, 2, false, Live(max_seq), &hits).ok());
      ASSERT_EQ(hits.size(), 2u);
      EXPECT_EQ(hits[0].key, want[0]);
      EXPECT_FALSE(hits[0].has_value);
    }
  }
}

TEST_F(QueryTest, FullTextMatchesReference) {
  Build({500, 400, 300}, 300, 500, 3);
  std::mt19937_64 rng(4);
  // Stats as the coordinator sees them: every indexed version, live or not.
  Ref ref;
  ref.docs = all_docs_;
  const double n = static_cast<double>(ref.DocCount());
  const double avgdl = static_cast<double>(ref.TotalLength()) / n;
  for (int q = 0; q < 80; q++) {
    const uint64_t max_seq = q % 2 ? last_seq_ : rng() % (last_seq_ + 1);
    const std::string query = RandomText(rng, 3) + (q % 7 == 0 ? " absentword" : "");
    const bool match_all = q % 3 == 0;
    std::vector<std::string> tokens, terms;
    analyzer_->Tokenize(query, &tokens);
    for (auto& t : tokens) {
      if (std::find(terms.begin(), terms.end(), t) == terms.end()) terms.push_back(t);
    }
    std::vector<double> idf;
    for (const auto& t : terms) {
      const double df = static_cast<double>(ref.DocFrequency(t));
      idf.push_back(std::log(1.0 + (n - df + 0.5) / (df + 0.5)));
    }
    std::vector<std::pair<double, std::string>> want;
    for (const AnalyzedDoc* d : LiveDocs(max_seq)) {
      double score;
      if (!terms.empty() && Ref::Score(*d, terms, idf, avgdl, match_all, &score)) want.emplace_back(-score, d->key);
    }
    std::sort(want.begin(), want.end());
    for (size_t limit : {size_t{10}, size_t{100000}}) {
      int calls = 0;
      std::vector<Hit> hits;
      ASSERT_TRUE(FullTextSearch(sources_, *analyzer_, query, match_all, max_seq, limit, true, Live(max_seq, &calls), &hits).ok());
      ASSERT_EQ(hits.size(), std::min(limit, want.size())) << query;
      for (size_t i = 0; i < hits.size(); i++) {
        EXPECT_NEAR(hits[i].score, -want[i].first, 1e-9) << query << " #" << i;
        // Keys are compared where the order is not a tie: scores equal up
        // to rounding may come out in either order (segment.cc is built
        // with -march=native, so FMA may round its sums differently).
        const bool tied = (i > 0 && std::abs(want[i].first - want[i - 1].first) < 1e-9) ||
                          (i + 1 < want.size() && std::abs(want[i].first - want[i + 1].first) < 1e-9);
        if (!tied) {
          EXPECT_EQ(hits[i].key, want[i].second);
        }
        EXPECT_TRUE(hits[i].has_value);
      }
      // Best first: the walk stops early rather than checking every candidate.
      if (limit == 10 && want.size() > 100) {
        EXPECT_LT(calls, static_cast<int>(want.size()));
      }
    }
  }
  std::vector<Hit> hits;
  ASSERT_TRUE(FullTextSearch(sources_, *analyzer_, "", false, last_seq_, 10, false, Live(last_seq_), &hits).ok());
  EXPECT_TRUE(hits.empty());
  ASSERT_TRUE(FullTextSearch(sources_, *analyzer_, "!!! ...", false, last_seq_, 10, false, Live(last_seq_), &hits).ok());
  EXPECT_TRUE(hits.empty());
  ASSERT_TRUE(FullTextSearch({}, *analyzer_, "apple", false, last_seq_, 10, false, Live(last_seq_), &hits).ok());
  EXPECT_TRUE(hits.empty());
}

// Over segments with and without HNSW graphs: approximate with graphs
// (recall >= 0.95), exact with the scan of int8 codes and rescoring.
// 0: exact scans; 1: two segments with HNSW graphs; 2: exact scans spread
// over threads (which must give exactly what one thread gives).
class SemanticQueryTest : public QueryTest, public ::testing::WithParamInterface<int> {};

TEST_P(SemanticQueryTest, RecallAgainstBruteForce) {
  const bool graphs = GetParam() == 1;
  const uint64_t parallel_from = GetParam() == 2 ? 0 : UINT64_MAX;
  if (graphs) config_.hnsw_min_vectors = 1000;
  Build({2600, 2100, 500}, 400, 3000, 5);
  ASSERT_EQ(segments_[0]->has_hnsw(), graphs);
  ASSERT_EQ(segments_[1]->has_hnsw(), graphs);
  std::mt19937_64 rng(6);
  size_t found = 0, wanted = 0;
  for (int q = 0; q < 60; q++) {
    const uint64_t max_seq = q % 2 ? last_seq_ : last_seq_ / 2 + rng() % (last_seq_ / 2);
    std::vector<std::vector<float>> qv;
    ASSERT_TRUE(embedder_->Embed({RandomText(rng, 4)}, &qv).ok());
    if (std::all_of(qv[0].begin(), qv[0].end(), [](float f) { return f == 0; })) continue;
    std::vector<double> want;
    for (const AnalyzedDoc* d : LiveDocs(max_seq)) {
      if (!d->vector.empty()) want.push_back(Dot(d->vector, qv[0].data()));
    }
    std::sort(want.rbegin(), want.rend());
    std::vector<Hit> hits;
    ASSERT_TRUE(SemanticSearch(sources_, qv[0], 10, -1.0, max_seq, false, Live(max_seq), &hits, parallel_from).ok());
    ASSERT_EQ(hits.size(), std::min<size_t>(10, want.size()));
    if (parallel_from == 0) {
      std::vector<Hit> serial;
      ASSERT_TRUE(SemanticSearch(sources_, qv[0], 10, -1.0, max_seq, false, Live(max_seq), &serial, UINT64_MAX).ok());
      ASSERT_EQ(serial.size(), hits.size());
      for (size_t i = 0; i < hits.size(); i++) {
        EXPECT_EQ(serial[i].key, hits[i].key);
        EXPECT_EQ(serial[i].score, hits[i].score);
      }
    }
    std::set<std::string> keys;
    for (size_t i = 0; i < hits.size(); i++) {
      EXPECT_TRUE(keys.insert(hits[i].key).second) << "duplicate key";
      if (i > 0) {
        EXPECT_GE(hits[i - 1].score, hits[i].score);
      }
      // Count a hit as right when it scores at least the 10th best (ties).
      found += hits[i].score >= want[hits.size() - 1] - 1e-6;
    }
    wanted += hits.size();

    // A threshold cuts the list.
    const double threshold = want.size() > 5 ? want[5] : 0.0;
    ASSERT_TRUE(SemanticSearch(sources_, qv[0], 10, threshold, max_seq, true, Live(max_seq), &hits, parallel_from).ok());
    for (const auto& h : hits) {
      EXPECT_GE(h.score, threshold);
      EXPECT_TRUE(h.has_value);
    }
  }
  const double recall = static_cast<double>(found) / wanted;
  std::printf("semantic recall@10 over 4 sources (%s): %.3f\n",
              graphs ? "2 HNSW" : parallel_from == 0 ? "no graphs, parallel" : "no graphs", recall);
  EXPECT_GE(recall, graphs ? 0.95 : 1.0);
}

INSTANTIATE_TEST_SUITE_P(Graphs, SemanticQueryTest, ::testing::Values(0, 1, 2));

TEST_F(QueryTest, SemanticKeepsLookingPastDeadCandidates) {
  Build({300}, 100, 200, 7);
  // Everything in the segment is shadowed except what the memtable holds:
  // the first rounds find only dead candidates, and the search must widen.
  std::vector<float> q(64, 0.0f);
  q[0] = 1.0f;
  std::vector<Hit> hits;
  ASSERT_TRUE(SemanticSearch(sources_, q, 50, -1.0, last_seq_, false, Live(last_seq_), &hits).ok());
  size_t live_vectors = 0;
  for (const AnalyzedDoc* d : LiveDocs(last_seq_)) live_vectors += !d->vector.empty();
  EXPECT_EQ(hits.size(), std::min<size_t>(50, live_vectors));
  ASSERT_TRUE(SemanticSearch(sources_, q, 0, -1.0, last_seq_, false, Live(last_seq_), &hits).ok());
  EXPECT_TRUE(hits.empty());
}

TEST_F(QueryTest, LiveCheckErrorsPropagate) {
  Build({100}, 50, 50, 8);
  LiveCheck failing = [](std::string_view, uint64_t, bool*, std::string*) { return Status::IOError("disk"); };
  std::vector<Hit> hits;
  EXPECT_TRUE(FullTextSearch(sources_, *analyzer_, "apple banana search", false, last_seq_, 10, false, failing, &hits).IsIOError());
  std::vector<float> q(64, 0.125f);
  EXPECT_TRUE(SemanticSearch(sources_, q, 10, -1.0, last_seq_, false, failing, &hits).IsIOError());
  EXPECT_TRUE(ExactSearch(sources_, "1", last_seq_, 10, false, failing, &hits).IsIOError());
}

}  // namespace
}  // namespace kvstore::index
