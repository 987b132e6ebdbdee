#include "index/segment.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <atomic>
#include <cmath>
#include <random>
#include <filesystem>
#include <thread>

#include "engine/coding/checksum.h"
#include "engine/coding/coding.h"
#include "index/embedder.h"
#include "index/index_test_util.h"
#include "index/mem_index.h"
#include "kvstore/env.h"

namespace kvstore::index {
namespace {

using namespace testutil;

struct Fixture {
  IndexConfig config;
  std::unique_ptr<Analyzer> analyzer;
  std::shared_ptr<Embedder> embedder;
  Ref ref;

  explicit Fixture(int dimension) {
    embedder = NewHashingEmbedder(dimension);
    config.embedder_name = embedder->name();
    config.dimension = dimension;
    EXPECT_TRUE(Analyzer::Create(config.analyzer, &analyzer).ok());
  }
  // n docs over n/2 keys, 1-3 versions each, seqs unique.
  void MakeDocs(size_t n, uint64_t seed, uint64_t first_seq = 1) {
    std::mt19937_64 rng(seed);
    uint64_t seq = first_seq;
    for (size_t i = 0; i < n; i++) {
      AnalyzedDoc d;
      char key[32];
      std::snprintf(key, sizeof(key), "key%06d", static_cast<int>(rng() % (n / 2 + 1)));
      ASSERT_TRUE(AnalyzeDoc(*analyzer, embedder.get(), key, seq++, RandomValue(rng), &d).ok());
      RoundToHalfPrecision(&d.vector);  // as the sources hold it: brute force over the same vectors
      ref.docs.push_back(std::move(d));
    }
  }
  // The segment of ref.docs, as a flush writes it.
  Status WriteSegment(std::string* contents) const {
    SegmentWriter writer(config);
    for (const auto& d : ref.docs) writer.Add(d);
    return writer.Finish(contents);
  }
};

std::string TempDir() {
  std::string dir = (std::filesystem::temp_directory_path() / ("index_test_" + std::to_string(getpid()))).string();
  std::filesystem::create_directories(dir);
  return dir;
}

std::shared_ptr<Segment> WriteAndOpen(const Fixture& f, const std::string& name) {
  SegmentWriter writer(f.config);
  for (const auto& d : f.ref.docs) writer.Add(d);
  Env* env = Env::Default();
  std::string path = TempDir() + "/" + name;
  std::unique_ptr<WritableFile> file;
  EXPECT_TRUE(env->NewWritableFile(path, &file).ok());
  EXPECT_TRUE(writer.Finish(file.get()).ok());
  EXPECT_TRUE(file->Sync().ok());
  EXPECT_TRUE(file->Close().ok());
  uint64_t size = 0;
  EXPECT_TRUE(env->GetFileSize(path, &size).ok());
  std::unique_ptr<RandomAccessFile> in;
  EXPECT_TRUE(env->NewRandomAccessFile(path, &in).ok());
  std::shared_ptr<Segment> segment;
  Status s = Segment::Open(std::move(in), size, path, &segment);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::filesystem::remove(path);
  return segment;
}

// Every query against the brute-force reference.
void CheckAgainstReference(const IndexSource& source, const Fixture& f, uint64_t seed) {
  const Ref& ref = f.ref;
  uint64_t max_seq_all = 0;
  for (const auto& d : ref.docs) max_seq_all = std::max(max_seq_all, d.seq);
  EXPECT_EQ(source.DocCount(), ref.DocCount());
  EXPECT_EQ(source.TotalLength(), ref.TotalLength());
  std::vector<std::string> terms;
  for (const auto& w : Vocabulary()) f.analyzer->Tokenize(w, &terms);
  terms.push_back("absent");
  for (const auto& t : terms) EXPECT_EQ(source.DocFrequency(t), ref.DocFrequency(t)) << t;

  std::mt19937_64 rng(seed);
  for (int q = 0; q < 60; q++) {
    const uint64_t max_seq = (q % 3 == 0) ? max_seq_all : rng() % (max_seq_all + 1);
    // Exact.
    const AnalyzedDoc& probe = ref.docs[rng() % ref.docs.size()];
    std::vector<Candidate> got;
    source.ExactCandidates(probe.value_hash, max_seq, &got);
    std::set<Version> want;
    for (const auto& d : ref.docs) {
      if (d.value_hash == probe.value_hash && d.seq <= max_seq) want.emplace(d.key, d.seq);
    }
    EXPECT_EQ(Versions(got), want);

    // BM25.
    std::vector<std::string> qterms;
    size_t nterms = 1 + rng() % 3;
    while (qterms.size() < nterms) {
      const std::string& t = terms[static_cast<size_t>(std::pow(std::uniform_real_distribution<double>(0, 1)(rng), 2) * terms.size())];
      if (std::find(qterms.begin(), qterms.end(), t) == qterms.end()) qterms.push_back(t);
    }
    std::vector<double> idf;
    for (size_t i = 0; i < qterms.size(); i++) idf.push_back(0.5 + i);
    const double avgdl = 7.5;
    for (bool match_all : {false, true}) {
      got.clear();
      source.ScoreTerms(qterms, idf, avgdl, match_all, max_seq, &got);
      std::map<Version, double> want_scores;
      for (const auto& d : ref.docs) {
        double score;
        if (d.seq <= max_seq && Ref::Score(d, qterms, idf, avgdl, match_all, &score)) want_scores[{d.key, d.seq}] = score;
      }
      ASSERT_EQ(got.size(), want_scores.size());
      for (const auto& c : got) {
        auto it = want_scores.find({c.key, c.seq});
        ASSERT_NE(it, want_scores.end());
        EXPECT_NEAR(c.score, it->second, 1e-9);
      }
    }

    // Vectors (exact below the HNSW threshold).
    std::vector<std::vector<float>> qv;
    ASSERT_TRUE(f.embedder->Embed({RandomText(rng, 6)}, &qv).ok());
    const size_t n = 1 + rng() % 20;
    got.clear();
    source.NearestVectors(qv[0].data(), f.config.dimension, n, max_seq, &got);
    std::vector<double> want_scores;
    for (const auto& d : ref.docs) {
      if (!d.vector.empty() && d.seq <= max_seq) want_scores.push_back(Dot(d.vector, qv[0].data()));
    }
    std::sort(want_scores.rbegin(), want_scores.rend());
    want_scores.resize(std::min(n, want_scores.size()));
    ASSERT_EQ(got.size(), want_scores.size());
    for (size_t i = 0; i < got.size(); i++) EXPECT_NEAR(got[i].score, want_scores[i], 1e-5);
    got.clear();
    source.NearestVectors(qv[0].data(), f.config.dimension + 1, n, max_seq, &got);
    EXPECT_TRUE(got.empty());
  }
}

void ExpectSameDoc(const AnalyzedDoc& a, const AnalyzedDoc& b) {
  EXPECT_EQ(a.key, b.key);
  EXPECT_EQ(a.seq, b.seq);
  EXPECT_EQ(a.value_hash, b.value_hash);
  EXPECT_EQ(a.terms, b.terms);
  // The segment writer trusts these to find a term in its dictionary.
  EXPECT_EQ(a.term_hashes, b.term_hashes);
  EXPECT_EQ(a.length, b.length);
  EXPECT_EQ(a.vector, b.vector);
}

// A cursor's lookups find what FindDoc finds, in table order (with absent
// docs in between, as a compaction's other inputs bring), in reverse and
// in random order.
TEST(SegmentTest, FindDocFromMatchesFindDoc) {
  Fixture f(64);
  f.MakeDocs(700, 31);
  auto segment = WriteAndOpen(f, "000031.idx");
  ASSERT_TRUE(segment);
  std::vector<std::pair<std::string, uint64_t>> present;
  segment->ForEachDoc([&](const AnalyzedDoc& d) { present.emplace_back(d.key, d.seq); });
  ASSERT_EQ(present.size(), f.ref.docs.size());
  std::vector<std::pair<std::string, uint64_t>> in_order;
  for (const auto& [key, seq] : present) {
    in_order.emplace_back(key, seq + 1000000);  // absent: newer than any
    in_order.emplace_back(key, seq);
    in_order.emplace_back(key + "~", seq);  // absent: between keys
  }
  std::vector<std::pair<std::string, uint64_t>> reversed(in_order.rbegin(), in_order.rend());
  std::vector<std::pair<std::string, uint64_t>> shuffled = in_order;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937_64(32));
  for (const auto* lookups : {&in_order, &reversed, &shuffled}) {
    size_t cursor = 0;
    for (const auto& [key, seq] : *lookups) {
      AnalyzedDoc want, got;
      const bool found = segment->FindDoc(key, seq, &want);
      ASSERT_EQ(segment->FindDocFrom(key, seq, &cursor, &got), found) << key << " " << seq;
      if (found) ExpectSameDoc(got, want);
    }
  }
}

TEST(SegmentTest, EmptySegment) {
  Fixture f(0);
  f.config.embedder_name.clear();
  auto segment = WriteAndOpen(f, "000001.idx");
  ASSERT_TRUE(segment);
  EXPECT_EQ(segment->docs(), 0u);
  EXPECT_EQ(segment->fingerprint(), f.config.Fingerprint());
  std::vector<Candidate> got;
  segment->ScoreTerms({"x"}, {1.0}, 1.0, false, UINT64_MAX, &got);
  EXPECT_TRUE(got.empty());
}

TEST(SegmentTest, RoundTripMatchesReference) {
  Fixture f(64);
  f.MakeDocs(600, 1);
  auto segment = WriteAndOpen(f, "000002.idx");
  ASSERT_TRUE(segment);
  EXPECT_FALSE(segment->has_hnsw());
  EXPECT_EQ(segment->docs(), f.ref.docs.size());
  CheckAgainstReference(*segment, f, 2);
  for (const auto& d : f.ref.docs) {
    AnalyzedDoc got;
    ASSERT_TRUE(segment->FindDoc(d.key, d.seq, &got));
    ExpectSameDoc(got, d);
    ASSERT_EQ(got.term_hashes.size(), got.terms.size());
    for (size_t t = 0; t < got.terms.size(); t++) {
      EXPECT_EQ(got.term_hashes[t], static_cast<uint32_t>(TokenHash(got.terms[t].first)));
    }
  }
  AnalyzedDoc none;
  EXPECT_FALSE(segment->FindDoc("nope", 1, &none));
  std::vector<std::pair<std::string, uint64_t>> order;
  segment->ForEachDoc([&](const AnalyzedDoc& d) { order.emplace_back(d.key, d.seq); });
  ASSERT_EQ(order.size(), f.ref.docs.size());
  for (size_t i = 1; i < order.size(); i++) {
    EXPECT_TRUE(order[i - 1].first < order[i].first ||
                (order[i - 1].first == order[i].first && order[i - 1].second > order[i].second));
  }
  EXPECT_GT(segment->MemoryUsage(), 0u);
}

TEST(SegmentTest, NoSemanticIndex) {
  Fixture f(32);
  f.MakeDocs(100, 3);
  f.config.embedder_name.clear();
  f.config.dimension = 0;
  auto segment = WriteAndOpen(f, "000003.idx");
  ASSERT_TRUE(segment);
  std::vector<Candidate> got;
  std::vector<float> q(32, 0.1f);
  segment->NearestVectors(q.data(), 32, 10, UINT64_MAX, &got);
  EXPECT_TRUE(got.empty());
  AnalyzedDoc d;
  ASSERT_TRUE(segment->FindDoc(f.ref.docs[0].key, f.ref.docs[0].seq, &d));
  EXPECT_TRUE(d.vector.empty());
}

TEST(SegmentTest, HnswRoundTrip) {
  Fixture f(64);
  f.config.hnsw_min_vectors = 1000;
  f.MakeDocs(2400, 4);
  auto segment = WriteAndOpen(f, "000004.idx");
  ASSERT_TRUE(segment);
  ASSERT_TRUE(segment->has_hnsw());
  for (size_t i = 0; i < f.ref.docs.size(); i += 7) {
    AnalyzedDoc got;
    ASSERT_TRUE(segment->FindDoc(f.ref.docs[i].key, f.ref.docs[i].seq, &got));
    ExpectSameDoc(got, f.ref.docs[i]);
  }
  // Approximate: recall@10 against brute force, with and without a snapshot
  // that hides part of the segment.
  std::mt19937_64 rng(5);
  size_t found = 0, wanted = 0;
  for (int q = 0; q < 100; q++) {
    const uint64_t max_seq = q % 2 ? UINT64_MAX : f.ref.docs.size() / 2;
    std::vector<std::vector<float>> qv;
    ASSERT_TRUE(f.embedder->Embed({RandomText(rng, 5)}, &qv).ok());
    std::vector<Candidate> got;
    segment->NearestVectors(qv[0].data(), 64, 10, max_seq, &got);
    std::vector<std::pair<double, Version>> all;
    for (const auto& d : f.ref.docs) {
      if (!d.vector.empty() && d.seq <= max_seq) all.emplace_back(Dot(d.vector, qv[0].data()), Version{d.key, d.seq});
    }
    std::sort(all.rbegin(), all.rend());
    const double tenth = all[std::min<size_t>(9, all.size() - 1)].first;
    for (const auto& c : got) EXPECT_LE(c.seq, max_seq);
    // Ties at the 10th score make any of them right: count by score.
    for (const auto& c : got) found += c.score >= tenth - 1e-6;
    wanted += std::min<size_t>(10, all.size());
    ASSERT_LE(got.size(), 10u);
  }
  const double recall = static_cast<double>(found) / wanted;
  std::printf("HNSW segment recall@10: %.3f\n", recall);
  EXPECT_GE(recall, 0.95);
}

// Without a graph the scan of int8 codes is exact: every one of the top 10
// scores as brute force does, for dense and sparse queries, under snapshots.
TEST(SegmentTest, ScanIsExact) {
  Fixture f(64);
  f.MakeDocs(2400, 14);
  auto segment = WriteAndOpen(f, "000014.idx");
  ASSERT_TRUE(segment);
  ASSERT_FALSE(segment->has_hnsw());
  std::mt19937_64 rng(15);
  std::normal_distribution<float> normal;
  for (int q = 0; q < 60; q++) {
    const uint64_t max_seq = q % 3 == 0 ? UINT64_MAX : rng() % (f.ref.docs.size() + 1);
    std::vector<float> query(64, 0.0f);
    if (q % 2 == 0) {
      std::vector<std::vector<float>> qv;
      ASSERT_TRUE(f.embedder->Embed({RandomText(rng, 3)}, &qv).ok());
      query = qv[0];
    } else {
      double norm = 0;
      for (float& x : query) {
        x = normal(rng);
        norm += static_cast<double>(x) * x;
      }
      for (float& x : query) x = static_cast<float>(x / std::sqrt(norm));
    }
    std::vector<double> want;
    for (const auto& d : f.ref.docs) {
      if (!d.vector.empty() && d.seq <= max_seq) want.push_back(Dot(d.vector, query.data()));
    }
    std::sort(want.rbegin(), want.rend());
    std::vector<Candidate> got;
    segment->NearestVectors(query.data(), 64, 10, max_seq, &got);
    ASSERT_EQ(got.size(), std::min<size_t>(10, want.size()));
    for (size_t i = 0; i < got.size(); i++) {
      EXPECT_LE(got[i].seq, max_seq);
      EXPECT_NEAR(got[i].score, want[i], 1e-5) << q << " " << i;
    }
  }
}

struct SectionEntry {
  uint32_t kind;
  uint64_t offset, size;
};

// The directory of a segment's bytes.
std::vector<SectionEntry> Sections(const std::string& s) {
  const size_t footer = s.size() - 40;
  std::string_view dir(s.data() + DecodeFixed64(s.data() + footer), DecodeFixed64(s.data() + footer + 8));
  std::vector<SectionEntry> out;
  uint32_t count = 0;
  EXPECT_TRUE(GetVarint32(&dir, &count));
  for (uint32_t i = 0; i < count; i++) {
    SectionEntry e{};
    EXPECT_TRUE(GetVarint32(&dir, &e.kind) && GetVarint64(&dir, &e.offset) && GetVarint64(&dir, &e.size) && dir.size() >= 8);
    dir.remove_prefix(8);
    out.push_back(e);
  }
  return out;
}

// Where the floats of the vectors section start, from the file's start.
uint64_t FloatsOffset(const std::string& s, const SectionEntry& vectors) {
  std::string_view v(s.data() + vectors.offset, vectors.size);
  uint32_t dim = 0, num = 0, delta = 0;
  EXPECT_TRUE(GetVarint32(&v, &dim) && GetVarint32(&v, &num));
  for (uint32_t i = 0; i < num; i++) EXPECT_TRUE(GetVarint32(&v, &delta));
  return static_cast<uint64_t>(v.data() - s.data());
}

// The same segment as a writer without the padding section (kind 7) made
// it, except that `pad` bytes of padding go before the vectors; with
// version1, as a version 1 writer made it (float32 vectors).
std::string WithPadding(const std::string& s, size_t pad, bool version1 = false) {
  auto put64 = [](std::string* dst, uint64_t v) {
    while (v >= 0x80) {
      dst->push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    dst->push_back(static_cast<char>(v));
  };
  std::string out, entries;
  uint32_t count = 0;
  auto add = [&](uint32_t kind, std::string_view bytes) {
    PutVarint32(&entries, kind);
    put64(&entries, out.size());
    put64(&entries, bytes.size());
    PutFixed64(&entries, Checksum64(bytes, kind));
    out.append(bytes);
    count++;
  };
  for (const SectionEntry& e : Sections(s)) {
    if (e.kind == 7) continue;
    if (e.kind == 5 && pad > 0) add(7, std::string(pad, '\0'));
    if (e.kind == 5 && version1) {
      const size_t at = FloatsOffset(s, e);
      std::string v(s.data() + e.offset, at - e.offset);
      for (size_t i = at; i < e.offset + e.size; i += 2) {
        PutFixed32(&v, std::bit_cast<uint32_t>(HalfToFloat(static_cast<uint16_t>(DecodeFixed32(s.data() + i) & 0xffff))));
      }
      add(e.kind, v);
      continue;
    }
    add(e.kind, std::string_view(s.data() + e.offset, e.size));
  }
  std::string dir;
  PutVarint32(&dir, count);
  dir.append(entries);
  const uint64_t dir_offset = out.size();
  out.append(dir);
  const char* old_footer = s.data() + s.size() - 40;
  std::string footer;
  PutFixed64(&footer, dir_offset);
  PutFixed64(&footer, dir.size());
  PutFixed64(&footer, Checksum64(dir));
  PutFixed32(&footer, version1 ? 1 : DecodeFixed32(old_footer + 24));  // the version
  PutFixed32(&footer, Checksum32(footer));
  footer.append(old_footer + 32, 8);  // the magic
  out.append(footer);
  return out;
}

// A writer puts the vectors at a multiple of 64 bytes, so a reader uses them
// in place; a file without that padding (an earlier writer's) reads the
// same, through a copy.
// Two segments of the same docs answer 20 random nearest-vector queries
// alike: same keys, seqs and scores, in the same order.
void ExpectSameNearest(const Fixture& f, const Segment& a, const Segment& b, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int q = 0; q < 20; q++) {
    std::vector<std::vector<float>> qv;
    ASSERT_TRUE(f.embedder->Embed({RandomText(rng, 3)}, &qv).ok());
    std::vector<Candidate> ga, gb;
    a.NearestVectors(qv[0].data(), 64, 10, UINT64_MAX, &ga);
    b.NearestVectors(qv[0].data(), 64, 10, UINT64_MAX, &gb);
    ASSERT_EQ(ga.size(), gb.size());
    for (size_t i = 0; i < ga.size(); i++) {
      EXPECT_EQ(ga[i].key, gb[i].key);
      EXPECT_EQ(ga[i].seq, gb[i].seq);
      EXPECT_EQ(ga[i].score, gb[i].score);
    }
  }
}

TEST(SegmentTest, VectorsAreAlignedAndUnalignedOnesStillRead) {
  Fixture f(64);
  f.MakeDocs(500, 21);
  std::string padded;
  ASSERT_TRUE(f.WriteSegment(&padded).ok());
  const std::vector<SectionEntry> sections = Sections(padded);
  auto vectors = std::find_if(sections.begin(), sections.end(), [](const SectionEntry& e) { return e.kind == 5; });
  ASSERT_NE(vectors, sections.end());
  EXPECT_EQ(FloatsOffset(padded, *vectors) % 64, 0u);

  // Unpadded, with the binary16 values off a multiple of 2.
  std::string unpadded = WithPadding(padded, 0);
  {
    const std::vector<SectionEntry> u = Sections(unpadded);
    auto v = std::find_if(u.begin(), u.end(), [](const SectionEntry& e) { return e.kind == 5; });
    ASSERT_NE(v, u.end());
    if (FloatsOffset(unpadded, *v) % 2 == 0) unpadded = WithPadding(padded, 1);
  }
  std::shared_ptr<Segment> a, b;
  ASSERT_TRUE(Segment::OpenContents(padded, "a.idx", &a).ok());
  Status s = Segment::OpenContents(unpadded, "b.idx", &b);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectSameNearest(f, *a, *b, 22);
  for (const auto& d : f.ref.docs) {
    AnalyzedDoc da, db;
    ASSERT_TRUE(a->FindDoc(d.key, d.seq, &da));
    ASSERT_TRUE(b->FindDoc(d.key, d.seq, &db));
    EXPECT_EQ(da.vector, d.vector);
    EXPECT_EQ(db.vector, d.vector);
  }
}

TEST(SegmentTest, MemIndexMatchesReference) {
  Fixture f(64);
  f.MakeDocs(600, 6);
  MemIndex mem(f.config);
  for (const auto& d : f.ref.docs) mem.Add(d);
  CheckAgainstReference(mem, f, 7);
  for (const auto& d : f.ref.docs) {
    AnalyzedDoc got;
    ASSERT_TRUE(mem.FindDoc(d.key, d.seq, &got));
    ExpectSameDoc(got, d);
  }
  // Flushing the memtable's docs gives the same segment as the docs themselves.
  SegmentWriter a(f.config), b(f.config);
  mem.ForEachDoc([&](const AnalyzedDoc& d) { a.Add(d); });
  for (const auto& d : f.ref.docs) b.Add(d);
  std::string sa, sb;
  ASSERT_TRUE(a.Finish(&sa).ok());
  ASSERT_TRUE(b.Finish(&sb).ok());
  EXPECT_EQ(sa, sb);
  EXPECT_GT(mem.MemoryUsage(), 0u);
}

// The inverted indexes are built by queries, over what was added since the
// previous one: adds between queries must all be found, and a doc added
// twice is kept once.
TEST(SegmentTest, MemIndexCatchesUpBetweenQueries) {
  Fixture f(16);
  f.MakeDocs(900, 5);
  MemIndex mem(f.config);
  Fixture partial(16);
  size_t added = 0;
  for (size_t step : {1, 7, 0, 300, 2, 590}) {
    for (size_t i = 0; i < step; i++) {
      mem.Add(f.ref.docs[added]);
      mem.Add(f.ref.docs[added]);  // ignored: the same (key, seq)
      partial.ref.docs.push_back(f.ref.docs[added]);
      added++;
    }
    EXPECT_EQ(mem.docs(), added);
    CheckAgainstReference(mem, partial, 3);
  }
  ASSERT_EQ(added, f.ref.docs.size());
  size_t seen = 0;
  std::string prev_key;
  uint64_t prev_seq = 0;
  mem.ForEachDoc([&](const AnalyzedDoc& d) {
    if (seen > 0) {
      EXPECT_TRUE(prev_key < d.key || (prev_key == d.key && prev_seq > d.seq));
    }
    prev_key = d.key;
    prev_seq = d.seq;
    seen++;
  });
  EXPECT_EQ(seen, added);
  AnalyzedDoc none;
  EXPECT_FALSE(mem.FindDoc("no such key", 1, &none));
}

TEST(SegmentTest, MemIndexConcurrentAddAndQuery) {
  Fixture f(32);
  f.MakeDocs(3000, 8);
  MemIndex mem(f.config);
  std::atomic<bool> done{false};
  std::vector<std::thread> readers;
  std::atomic<uint64_t> queries{0};
  for (int t = 0; t < 3; t++) {
    readers.emplace_back([&, t] {
      std::vector<float> q(32, 0.0f);
      q[t] = 1.0f;
      while (!done.load()) {
        std::vector<Candidate> got;
        mem.ScoreTerms({"appl", "search"}, {1.0, 2.0}, 5.0, false, UINT64_MAX, &got);
        mem.NearestVectors(q.data(), 32, 5, UINT64_MAX, &got);
        mem.ExactCandidates(f.ref.docs[0].value_hash, UINT64_MAX, &got);
        for (const auto& c : got) ASSERT_FALSE(c.key.empty());
        (void)mem.DocCount();
        queries++;
      }
    });
  }
  for (const auto& d : f.ref.docs) mem.Add(d);
  // On a loaded machine the adds can finish before a reader got a turn.
  while (queries.load() == 0) std::this_thread::yield();
  done = true;
  for (auto& r : readers) r.join();
  EXPECT_GT(queries.load(), 0u);
  CheckAgainstReference(mem, f, 9);
}

// Recomputes every checksum, so damage inside a section reaches the parser.
std::string Reseal(std::string s) {
  const size_t footer = s.size() - 40;
  const uint64_t dir_offset = DecodeFixed64(s.data() + footer);
  const uint64_t dir_size = DecodeFixed64(s.data() + footer + 8);
  std::string_view dir(s.data() + dir_offset, dir_size);
  uint32_t count = 0;
  if (!GetVarint32(&dir, &count)) return s;
  for (uint32_t i = 0; i < count; i++) {
    uint32_t kind;
    uint64_t offset, size;
    if (!GetVarint32(&dir, &kind) || !GetVarint64(&dir, &offset) || !GetVarint64(&dir, &size) || dir.size() < 8) return s;
    if (offset + size <= s.size()) {
      EncodeFixed64(const_cast<char*>(dir.data()), Checksum64(std::string_view(s.data() + offset, size), kind));
    }
    dir.remove_prefix(8);
  }
  EncodeFixed64(s.data() + footer + 16, Checksum64(std::string_view(s.data() + dir_offset, dir_size)));
  EncodeFixed32(s.data() + footer + 28, Checksum32(std::string_view(s.data() + footer, 28)));
  return s;
}

void ExerciseQueries(const Segment& segment) {
  std::vector<Candidate> got;
  segment.ScoreTerms({"appl", "w0", "search"}, {1, 1, 1}, 3, false, UINT64_MAX, &got);
  segment.ExactCandidates(0, UINT64_MAX, &got);
  std::vector<float> q(segment.dimension() > 0 ? segment.dimension() : 1, 0.125f);
  segment.NearestVectors(q.data(), segment.dimension(), 10, UINT64_MAX, &got);
  AnalyzedDoc d;
  segment.ForEachDoc([](const AnalyzedDoc&) {});
}

TEST(SegmentTest, CorruptionIsDetected) {
  for (size_t docs : {40, 1100}) {
    Fixture f(16);
    f.config.hnsw_min_vectors = 1000;
    f.MakeDocs(docs, 10 + docs);
    std::string good;
    ASSERT_TRUE(f.WriteSegment(&good).ok());
    std::shared_ptr<Segment> segment;
    ASSERT_TRUE(Segment::OpenContents(good, "good.idx", &segment).ok());
    EXPECT_EQ(segment->has_hnsw(), docs > 1000);

    std::mt19937_64 rng(docs);
    // Every truncation.
    for (size_t len = 0; len < good.size(); len += (len < 100 || good.size() - len < 100) ? 1 : 1 + rng() % 97) {
      Status s = Segment::OpenContents(good.substr(0, len), "bad.idx", &segment);
      ASSERT_TRUE(s.IsCorruption()) << len << " " << s.ToString();
      EXPECT_NE(s.ToString().find("bad.idx"), std::string::npos);
    }
    // Flipped bytes: the checksums catch them.
    for (int i = 0; i < 300; i++) {
      std::string bad = good;
      bad[rng() % bad.size()] ^= static_cast<char>(1 + rng() % 255);
      ASSERT_TRUE(Segment::OpenContents(bad, "bad.idx", &segment).IsCorruption());
    }
    // Flipped bytes behind valid checksums: the parser must refuse or load
    // something safe to query, never crash.
    int opened = 0;
    for (int i = 0; i < 3000; i++) {
      std::string bad = good;
      for (int j = 0; j < 1 + static_cast<int>(rng() % 3); j++) {
        bad[rng() % (bad.size() - 40)] ^= static_cast<char>(1 << (rng() % 8));
      }
      Status s = Segment::OpenContents(Reseal(bad), "bad.idx", &segment);
      if (s.ok()) {
        opened++;
        ExerciseQueries(*segment);
      } else {
        ASSERT_TRUE(s.IsCorruption()) << s.ToString();
      }
    }
    std::printf("%zu docs: %d of 3000 resealed damaged segments opened (and were queried)\n", docs, opened);
  }
}

TEST(SegmentTest, FingerprintCoversTheConfig) {
  IndexConfig a;
  IndexConfig b = a;
  EXPECT_EQ(a.Fingerprint(), b.Fingerprint());
  b.prefixes = {"x", "y"};
  IndexConfig c = a;
  c.prefixes = {"y", "x", "x"};
  EXPECT_EQ(b.Fingerprint(), c.Fingerprint());
  EXPECT_NE(a.Fingerprint(), b.Fingerprint());
  c = a;
  c.analyzer.stop_words = true;
  EXPECT_NE(a.Fingerprint(), c.Fingerprint());
  c = a;
  c.dimension = 8;
  EXPECT_NE(a.Fingerprint(), c.Fingerprint());
  c = a;
  c.analyzer.stemmer_language = "";
  EXPECT_NE(a.Fingerprint(), c.Fingerprint());
}

TEST(SegmentTest, KeyIndexed) {
  IndexConfig c;
  EXPECT_TRUE(KeyIndexed(c, "anything"));
  c.prefixes = {"doc:", "user:"};
  EXPECT_TRUE(KeyIndexed(c, "doc:1"));
  EXPECT_TRUE(KeyIndexed(c, "user:"));
  EXPECT_FALSE(KeyIndexed(c, "do"));
  EXPECT_FALSE(KeyIndexed(c, "other"));
}

// Version 2 stores vectors as binary16; version 1 segments (float32) still
// open, and answer as the same docs written by version 2 do.
TEST(SegmentTest, Version1SegmentsStillRead) {
  for (const size_t docs : {size_t{500}, size_t{1200}}) {
    Fixture f(64);
    f.config.hnsw_min_vectors = 1000;  // the second round has a graph
    f.MakeDocs(docs, 23);
    std::string v2;
    ASSERT_TRUE(f.WriteSegment(&v2).ok());
    EXPECT_EQ(DecodeFixed32(v2.data() + v2.size() - 16), 2u);
    const std::string v1 = WithPadding(v2, 0, /*version1=*/true);
    EXPECT_EQ(DecodeFixed32(v1.data() + v1.size() - 16), 1u);
    EXPECT_GT(v1.size(), v2.size());
    std::shared_ptr<Segment> a, b;
    ASSERT_TRUE(Segment::OpenContents(v2, "a.idx", &a).ok());
    Status s = Segment::OpenContents(v1, "b.idx", &b);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(a->has_hnsw(), docs >= 1000);
    EXPECT_EQ(b->has_hnsw(), docs >= 1000);
    ExpectSameNearest(f, *a, *b, 24);
    for (const auto& d : f.ref.docs) {
      AnalyzedDoc db;
      ASSERT_TRUE(b->FindDoc(d.key, d.seq, &db));
      EXPECT_EQ(db.vector, d.vector);
    }
  }
  // A version from the future is corruption (the engine rebuilds the segment).
  Fixture f(16);
  f.MakeDocs(50, 25);
  std::string contents;
  ASSERT_TRUE(f.WriteSegment(&contents).ok());
  char* footer = contents.data() + contents.size() - 40;
  EncodeFixed32(footer + 24, 3);
  EncodeFixed32(footer + 28, Checksum32(std::string_view(footer, 28)));
  std::shared_ptr<Segment> c;
  EXPECT_TRUE(Segment::OpenContents(contents, "c.idx", &c).IsCorruption());
}

TEST(HalfTest, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; h++) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f))));
      continue;
    }
    ASSERT_EQ(FloatToHalf(f), h) << h;
    uint16_t out = 0;
    FloatsToHalves(&f, 1, &out);
    ASSERT_EQ(out, h);
  }
}

TEST(HalfTest, RoundsToNearestEven) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // the tie above the largest half goes to infinity
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3c00);  // a tie: to the even one
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);
  EXPECT_EQ(FloatToHalf(0x1p-24f), 0x0001);  // the smallest subnormal
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);  // a tie with zero
  EXPECT_EQ(FloatToHalf(0x1.8p-25f), 0x0001);
  EXPECT_EQ(FloatToHalf(0x1p-14f - 0x1p-26f), 0x0400);  // rounds up into the normals
  // The vectorised conversion (F16C where compiled for it) agrees with the
  // scalar one on random floats of every magnitude.
  std::mt19937_64 rng(26);
  std::vector<float> in(4099);
  for (float& x : in) {
    const uint32_t bits = static_cast<uint32_t>(rng());
    x = std::bit_cast<float>((bits & 0x80000000u) | ((0x60u + (bits >> 24) % 0x30u) << 23) | (bits & 0x7fffff));
  }
  std::vector<uint16_t> halves(in.size());
  FloatsToHalves(in.data(), in.size(), halves.data());
  std::vector<float> back(in.size());
  HalvesToFloats(halves.data(), halves.size(), back.data());
  for (size_t i = 0; i < in.size(); i++) {
    ASSERT_EQ(halves[i], FloatToHalf(in[i])) << in[i];
    ASSERT_EQ(back[i], HalfToFloat(halves[i]));
  }
  // The dot product of a binary16 vector with a float one, tail included.
  std::vector<float> a(259), b(259);
  for (size_t i = 0; i < a.size(); i++) {
    a[i] = std::uniform_real_distribution<float>(-0.2f, 0.2f)(rng);
    b[i] = std::uniform_real_distribution<float>(-0.2f, 0.2f)(rng);
  }
  std::vector<uint16_t> ah(a.size());
  FloatsToHalves(a.data(), a.size(), ah.data());
  double want = 0;
  for (size_t i = 0; i < a.size(); i++) want += static_cast<double>(HalfToFloat(ah[i])) * b[i];
  EXPECT_NEAR(DotProductHalf(ah.data(), b.data(), a.size()), want, 1e-5);
}

}  // namespace
}  // namespace kvstore::index
