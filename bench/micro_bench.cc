// Micro-benchmarks of the engine's parts, below the DB API: memtable insert
// and lookup, WAL append (no sync), write batch encoding, table blocks
// (encode with LZ4, decode and seek), the bloom filter; the server's request
// parsing (fast path and full JSON) and response serialization; and the
// search indexes: tokenizer, hashing embedder, segment build, queries.
//
//   build/bench/micro_bench [--benchmark_filter=MemTable] [--benchmark_min_time=0.5]
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <algorithm>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/coding/internal_key.h"
#include "engine/memtable/memtable.h"
#include "engine/sstable/block.h"
#include "engine/sstable/block_builder.h"
#include "engine/sstable/bloom.h"
#include "engine/sstable/format.h"
#include "net/fast_request.h"
#include "engine/wal/log_writer.h"
#include "index/analyzer.h"
#include "index/embedder.h"
#include "index/query.h"
#include "index/segment.h"
#include "kvstore/env.h"
#include "kvstore/write_batch.h"

namespace {

constexpr size_t kKeySize = 16;
constexpr size_t kValueSize = 100;

// n distinct-enough random 16-byte keys (zero-padded decimal of a random
// number below 10^16, like kvbench's keys), in one buffer.
std::string MakeKeys(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string keys(n * kKeySize, '0');
  for (size_t i = 0; i < n; i++) {
    uint64_t k = rng() % 10000000000000000ULL;
    for (size_t j = kKeySize; j > 0; j--) {
      keys[i * kKeySize + j - 1] = static_cast<char>('0' + k % 10);
      k /= 10;
    }
  }
  return keys;
}

std::string_view KeyAt(const std::string& keys, size_t i) {
  return std::string_view(keys).substr(i * kKeySize, kKeySize);
}

const std::string& Value() {
  static const std::string value = [] {
    std::mt19937_64 rng(7);
    std::string v(kValueSize, ' ');
    for (char& c : v) c = static_cast<char>(' ' + rng() % 95);
    return v;
  }();
  return value;
}

// Inserting into a table that grows forever would measure the machine's
// memory more than the memtable: start a new table every kInsertKeys.
constexpr size_t kInsertKeys = 1 << 20;

void BM_MemTableInsert(benchmark::State& state) {
  static const std::string keys = MakeKeys(kInsertKeys, 1);
  const std::string& value = Value();
  auto mem = std::make_unique<kvstore::MemTable>(1);
  size_t i = 0;
  kvstore::SequenceNumber seq = 1;
  for (auto _ : state) {
    if (i == kInsertKeys) {
      state.PauseTiming();
      mem = std::make_unique<kvstore::MemTable>(1);
      i = 0;
      state.ResumeTiming();
    }
    mem->Add(seq++, kvstore::ValueType::kValue, KeyAt(keys, i++), value);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(kKeySize + kValueSize));
}
BENCHMARK(BM_MemTableInsert);

// Lookups that hit, on a table of 1M entries built once.
constexpr size_t kLookupKeys = 1 << 20;

struct LookupTable {
  std::string keys = MakeKeys(kLookupKeys, 2);
  std::unique_ptr<kvstore::MemTable> mem = std::make_unique<kvstore::MemTable>(1);
  LookupTable() {
    kvstore::SequenceNumber seq = 1;
    for (size_t i = 0; i < kLookupKeys; i++) {
      mem->Add(seq++, kvstore::ValueType::kValue, KeyAt(keys, i), Value());
    }
  }
};

void BM_MemTableGetHit(benchmark::State& state) {
  static const LookupTable table;
  std::mt19937_64 rng(3);
  std::string value;
  uint64_t misses = 0;
  for (auto _ : state) {
    std::string_view key = KeyAt(table.keys, rng() % kLookupKeys);
    auto r = table.mem->Get(key, kvstore::kMaxSequenceNumber, &value);
    if (r != kvstore::MemTable::Lookup::kFound) misses++;
    benchmark::DoNotOptimize(value.data());
  }
  if (misses != 0) state.SkipWithError("a lookup of an inserted key missed");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MemTableGetHit);

// WAL append of one 120-byte record per call, without sync, to a segment
// in a fresh /tmp directory that is removed afterwards. A new segment every
// kWalRecords keeps the file (and the page cache) small.
constexpr size_t kWalRecordSize = 120;
constexpr int64_t kWalRecords = 256 * 1024;

void BM_WalAddRecord(benchmark::State& state) {
  char dir_template[] = "/tmp/kvstore-micro-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) {
    state.SkipWithError(std::strerror(errno));
    return;
  }
  const std::string dir = dir_template;
  const std::string path = dir + "/000001.log";
  kvstore::Env* env = kvstore::Env::Default();
  std::unique_ptr<kvstore::wal::LogWriter> writer;
  kvstore::Status s = kvstore::wal::LogWriter::Create(env, path, &writer);
  const std::string record(Value() + Value().substr(0, kWalRecordSize - kValueSize));
  int64_t in_segment = 0;
  for (auto _ : state) {
    if (!s.ok()) break;
    if (in_segment == kWalRecords) {
      state.PauseTiming();
      s = writer->Close();
      writer.reset();
      if (s.ok()) s = kvstore::wal::LogWriter::Create(env, path, &writer);
      in_segment = 0;
      state.ResumeTiming();
      if (!s.ok()) break;
    }
    s = writer->AddRecord(record);
    in_segment++;
  }
  if (writer != nullptr && s.ok()) s = writer->Close();
  writer.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (!s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(kWalRecordSize));
}
BENCHMARK(BM_WalAddRecord);

// Encoding a batch: one Put of a 16-byte key and a 100-byte value, and a
// batch of 100 such Puts (what a client that batches would build).
void BM_WriteBatchPut(benchmark::State& state) {
  static const std::string keys = MakeKeys(1024, 4);
  const std::string& value = Value();
  const int64_t entries = state.range(0);
  kvstore::WriteBatch batch;
  size_t k = 0;
  for (auto _ : state) {
    batch.Clear();
    for (int64_t i = 0; i < entries; i++) batch.Put(KeyAt(keys, k++ & 1023), value);
    benchmark::DoNotOptimize(batch.ByteSize());
  }
  state.SetItemsProcessed(state.iterations() * entries);
  state.SetBytesProcessed(state.iterations() * entries *
                          static_cast<int64_t>(kKeySize + kValueSize));
}
BENCHMARK(BM_WriteBatchPut)->Arg(1)->Arg(100);

// --- search indexes -------------------------------------------------------

// A ~100-word English paragraph, varied per doc so the embedder and the
// term dictionary see realistic spread.
std::string IndexDoc(uint64_t i) {
  static const char* const kWords[] = {
      "the",     "storage", "engine",  "writes",   "every",  "batch",    "to",      "a",       "log",
      "before",  "memory",  "tables",  "flush",    "sorted", "runs",     "search",  "index",   "segments",
      "Running", "queries", "across",  "many",     "files",  "Unicode",  "café",    "東京",     "vector",
      "nearest", "cosine",  "ranking", "BM25",     "terms",  "frequent", "rare",    "keys",    "values",
      "JSON",    "object",  "string",  "compaction", "level", "bloom",   "filter",  "checksum", "block"};
  constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);
  std::mt19937_64 rng(i);
  std::string doc;
  for (int w = 0; w < 100; w++) {
    if (w > 0) doc += (w % 12 == 0) ? ". " : " ";
    doc += kWords[rng() % kNumWords];
    if (rng() % 8 == 0) doc += std::to_string(rng() % 1000);
  }
  return doc;
}

void BM_Tokenize(benchmark::State& state) {
  std::unique_ptr<kvstore::index::Analyzer> analyzer;
  kvstore::index::AnalyzerOptions options;
  if (state.range(0) == 0) options.stemmer_language.clear();
  if (!kvstore::index::Analyzer::Create(options, &analyzer).ok()) state.SkipWithError("analyzer");
  std::vector<std::string> docs;
  for (uint64_t i = 0; i < 64; i++) docs.push_back(IndexDoc(i));
  std::vector<std::string> tokens;
  size_t i = 0, bytes = 0;
  for (auto _ : state) {
    tokens.clear();
    const std::string& d = docs[i++ % docs.size()];
    analyzer->Tokenize(d, &tokens);
    bytes += d.size();
    benchmark::DoNotOptimize(tokens.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));  // docs
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}
BENCHMARK(BM_Tokenize)->Arg(0)->Arg(1)->ArgName("stem");

void BM_HashingEmbed(benchmark::State& state) {
  auto embedder = kvstore::NewHashingEmbedder(static_cast<int>(state.range(0)));
  std::vector<std::string> docs;
  for (uint64_t i = 0; i < 64; i++) docs.push_back(IndexDoc(i));
  std::vector<std::vector<float>> vectors;
  size_t i = 0;
  for (auto _ : state) {
    if (!embedder->Embed({docs[i++ % docs.size()]}, &vectors).ok()) state.SkipWithError("embed");
    benchmark::DoNotOptimize(vectors.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_HashingEmbed)->Arg(256);

// n analysed docs (values are JSON strings), with 256-dim hashing vectors.
struct IndexCorpus {
  kvstore::index::IndexConfig config;
  std::unique_ptr<kvstore::index::Analyzer> analyzer;
  std::shared_ptr<kvstore::Embedder> embedder;
  std::vector<kvstore::index::AnalyzedDoc> docs;
  std::shared_ptr<kvstore::index::Segment> segment;

  explicit IndexCorpus(size_t n) {
    embedder = kvstore::NewHashingEmbedder(256);
    config.embedder_name = embedder->name();
    config.dimension = 256;
    (void)kvstore::index::Analyzer::Create(config.analyzer, &analyzer);
    for (size_t i = 0; i < n; i++) {
      char key[32];
      std::snprintf(key, sizeof(key), "doc%08zu", i);
      kvstore::index::AnalyzedDoc d;
      (void)kvstore::index::AnalyzeDoc(*analyzer, embedder.get(), key, i + 1, "\"" + IndexDoc(i) + "\"", &d);
      docs.push_back(std::move(d));
    }
    kvstore::index::SegmentWriter writer(config);
    for (const auto& d : docs) writer.Add(d);
    std::string contents;
    (void)writer.Finish(&contents);
    (void)kvstore::index::Segment::OpenContents(std::move(contents), "bench.idx", &segment);
  }
  static IndexCorpus& Get() {
    static IndexCorpus corpus(5000);
    return corpus;
  }
};

// Analyses values (JSON strings) in turn, one per iteration.
void AnalyzeInTurn(benchmark::State& state, const std::vector<std::string>& values) {
  IndexCorpus& c = IndexCorpus::Get();
  kvstore::index::AnalyzedDoc d;
  size_t i = 0;
  for (auto _ : state) {
    (void)kvstore::index::AnalyzeDoc(*c.analyzer, c.embedder.get(), "key", 1, values[i++ % values.size()], &d);
    benchmark::DoNotOptimize(d.terms.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_AnalyzeDoc(benchmark::State& state) {
  std::vector<std::string> values;
  for (uint64_t i = 0; i < 64; i++) values.push_back("\"" + IndexDoc(i) + "\"");
  AnalyzeInTurn(state, values);
}
BENCHMARK(BM_AnalyzeDoc);

// As kvbench search writes them: 20-49 made-up ASCII words from a
// 20000-word vocabulary, Zipf-distributed. BM_AnalyzeDoc's 45 words,
// cycled through 64 docs, stay in every cache and let the branch predictor
// learn the docs; these do not.
std::vector<std::string> ZipfValues(size_t n) {
  std::mt19937_64 rng(42);
  static const char* const kOnsets[] = {"b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t",
                                        "v", "br", "cl", "dr", "st", "tr", "sh", "ch", "pl", "gr"};
  static const char* const kVowels[] = {"a", "e", "i", "o", "u", "ai", "ea", "ou"};
  std::vector<std::string> words;
  while (words.size() < 20000) {
    std::string w;
    for (int i = 0, syllables = 1 + static_cast<int>(rng() % 3); i < syllables; i++) {
      w += kOnsets[rng() % std::size(kOnsets)];
      w += kVowels[rng() % std::size(kVowels)];
    }
    if (rng() % 3 == 0) w += "s";
    words.push_back(std::move(w));
  }
  std::vector<double> cdf(words.size());
  double sum = 0;
  for (size_t i = 0; i < cdf.size(); i++) cdf[i] = (sum += 1.0 / static_cast<double>(i + 1));
  std::vector<std::string> values;
  for (size_t d = 0; d < n; d++) {
    std::string v = "\"";
    for (int i = 0, words_in_doc = 20 + static_cast<int>(rng() % 30); i < words_in_doc; i++) {
      const double u = std::uniform_real_distribution<double>(0, sum)(rng);
      const size_t w = std::min<size_t>(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin(), words.size() - 1);
      if (i > 0) v += ' ';
      v += words[w];
    }
    values.push_back(v + "\"");
  }
  return values;
}

void BM_AnalyzeDocZipf(benchmark::State& state) {
  static const std::vector<std::string> values = ZipfValues(4096);
  AnalyzeInTurn(state, values);
}
BENCHMARK(BM_AnalyzeDocZipf)->Threads(1)->Threads(2);

// A flush's segment of kvbench search's documents: 20000 docs borrowed from
// the memtable's index, as many as one memtable holds there, with a
// dictionary of ~15000 terms that no longer sits in the L1 cache.
const std::vector<kvstore::index::AnalyzedDoc>& ZipfDocs() {
  static const std::vector<kvstore::index::AnalyzedDoc> docs = [] {
    IndexCorpus& c = IndexCorpus::Get();
    const std::vector<std::string> values = ZipfValues(20000);
    std::vector<kvstore::index::AnalyzedDoc> out(values.size());
    for (size_t i = 0; i < values.size(); i++) {
      char key[32];
      std::snprintf(key, sizeof(key), "doc:%010zu", i);
      (void)kvstore::index::AnalyzeDoc(*c.analyzer, c.embedder.get(), key, i + 1, values[i], &out[i]);
    }
    return out;
  }();
  return docs;
}

// A flush's segment: the docs borrowed from the memtable's index. Empty
// when the writer fails.
std::string BorrowedSegment(const std::vector<kvstore::index::AnalyzedDoc>& docs) {
  kvstore::index::SegmentWriter writer(IndexCorpus::Get().config);
  for (const auto& d : docs) writer.AddBorrowed(&d);
  std::string contents;
  if (!writer.Finish(&contents).ok()) contents.clear();
  return contents;
}

void BM_SegmentBuildZipf(benchmark::State& state) {
  const std::vector<kvstore::index::AnalyzedDoc>& docs = ZipfDocs();
  for (auto _ : state) {
    std::string contents = BorrowedSegment(docs);
    if (contents.empty()) state.SkipWithError("finish");
    benchmark::DoNotOptimize(contents.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * docs.size()));
}
BENCHMARK(BM_SegmentBuildZipf)->Unit(benchmark::kMillisecond);

// A compaction's segment: the same docs carried from a segment
// (Segment::FindDocFrom, in table order) into a new one.
void BM_SegmentRewriteZipf(benchmark::State& state) {
  IndexCorpus& c = IndexCorpus::Get();
  const std::vector<kvstore::index::AnalyzedDoc>& docs = ZipfDocs();
  std::shared_ptr<kvstore::index::Segment> input;
  if (!kvstore::index::Segment::OpenContents(BorrowedSegment(docs), "input.idx", &input).ok()) {
    state.SkipWithError("input segment");
    return;
  }
  for (auto _ : state) {
    kvstore::index::SegmentWriter writer(c.config);
    size_t cursor = 0;
    for (const auto& d : docs) {
      kvstore::index::AnalyzedDoc carried;
      if (!input->FindDocFrom(d.key, d.seq, &cursor, &carried)) state.SkipWithError("find");
      writer.Add(std::move(carried));
    }
    std::string contents;
    if (!writer.Finish(&contents).ok()) state.SkipWithError("finish");
    benchmark::DoNotOptimize(contents.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * docs.size()));
}
BENCHMARK(BM_SegmentRewriteZipf)->Unit(benchmark::kMillisecond);

// Writing a segment from analysed docs, HNSW graph included (>= 1000 vectors).
void BM_SegmentBuild(benchmark::State& state) {
  IndexCorpus& c = IndexCorpus::Get();
  const size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    kvstore::index::SegmentWriter writer(c.config);
    for (size_t i = 0; i < n; i++) writer.Add(c.docs[i]);
    std::string contents;
    if (!writer.Finish(&contents).ok()) state.SkipWithError("finish");
    benchmark::DoNotOptimize(contents.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));  // docs
}
BENCHMARK(BM_SegmentBuild)->Arg(500)->Arg(2000)->Unit(benchmark::kMillisecond);

// As a flush builds a segment: the docs read in place from the memtable's
// index (SegmentWriter::AddBorrowed), not copied in.
void BM_SegmentBuildBorrowed(benchmark::State& state) {
  IndexCorpus& c = IndexCorpus::Get();
  const size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    kvstore::index::SegmentWriter writer(c.config);
    for (size_t i = 0; i < n; i++) writer.AddBorrowed(&c.docs[i]);
    std::string contents;
    if (!writer.Finish(&contents).ok()) state.SkipWithError("finish");
    benchmark::DoNotOptimize(contents.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));  // docs
}
BENCHMARK(BM_SegmentBuildBorrowed)->Arg(2000)->Unit(benchmark::kMillisecond);

void BM_SegmentOpen(benchmark::State& state) {
  IndexCorpus& c = IndexCorpus::Get();
  kvstore::index::SegmentWriter writer(c.config);
  for (const auto& d : c.docs) writer.Add(d);
  std::string contents;
  (void)writer.Finish(&contents);
  for (auto _ : state) {
    std::shared_ptr<kvstore::index::Segment> segment;
    if (!kvstore::index::Segment::OpenContents(contents, "bench.idx", &segment).ok()) state.SkipWithError("open");
  }
  state.counters["file_bytes"] = static_cast<double>(contents.size());
}
BENCHMARK(BM_SegmentOpen)->Unit(benchmark::kMillisecond);

kvstore::Status AlwaysLive(std::string_view, uint64_t, bool* live, std::string*) {
  *live = true;
  return kvstore::Status::OK();
}

void BM_FullTextQuery(benchmark::State& state) {
  IndexCorpus& c = IndexCorpus::Get();
  std::vector<const kvstore::index::IndexSource*> sources = {c.segment.get()};
  const char* const queries[] = {"compaction bloom filter", "nearest cosine vector", "café 東京", "rare keys"};
  std::vector<kvstore::index::Hit> hits;
  size_t i = 0;
  for (auto _ : state) {
    (void)kvstore::index::FullTextSearch(sources, *c.analyzer, queries[i++ % 4], state.range(0) != 0, UINT64_MAX, 10,
                                         false, AlwaysLive, &hits);
  }
}
BENCHMARK(BM_FullTextQuery)->Arg(0)->Arg(1)->ArgName("match_all");

void BM_SemanticQuery(benchmark::State& state) {
  IndexCorpus& c = IndexCorpus::Get();
  std::vector<const kvstore::index::IndexSource*> sources = {c.segment.get()};
  std::vector<std::vector<float>> queries;
  (void)c.embedder->Embed({"compaction bloom filter", "nearest cosine vector", "search index segments"}, &queries);
  std::vector<kvstore::index::Hit> hits;
  size_t i = 0;
  for (auto _ : state) {
    (void)kvstore::index::SemanticSearch(sources, queries[i++ % queries.size()], 10, 0.0, UINT64_MAX, false,
                                         AlwaysLive, &hits);
  }
}
BENCHMARK(BM_SemanticQuery);

// A table's data block as the table builder writes it: about 4 KiB of
// sorted internal keys with 100-byte values.
std::string SortedBlock(size_t* entries) {
  std::string keys = MakeKeys(2000, 11);
  std::vector<std::string> sorted;
  for (size_t i = 0; i < 2000; i++) sorted.emplace_back(KeyAt(keys, i));
  std::sort(sorted.begin(), sorted.end());
  std::string ikey;
  *entries = 0;
  kvstore::sstable::BlockBuilder block;
  size_t bytes = 0;
  for (const std::string& k : sorted) {
    ikey.clear();
    kvstore::AppendInternalKey(&ikey, k, 1000, kvstore::ValueType::kValue);
    block.Add(ikey, Value());
    bytes += ikey.size() + Value().size();
    ++*entries;
    if (bytes >= 4096) break;
  }
  return std::string(block.Finish());
}

void BM_BlockEncode(benchmark::State& state) {
  std::string keys = MakeKeys(64, 11);
  std::vector<std::string> sorted;
  for (size_t i = 0; i < 64; i++) sorted.emplace_back(KeyAt(keys, i));
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::string> ikeys;
  for (const std::string& k : sorted) {
    ikeys.emplace_back();
    kvstore::AppendInternalKey(&ikeys.back(), k, 1000, kvstore::ValueType::kValue);
  }
  const auto compression = state.range(0) ? kvstore::sstable::Compression::kLZ4 : kvstore::sstable::Compression::kNone;
  kvstore::sstable::BlockBuilder block;
  std::string out;
  for (auto _ : state) {
    block.Reset();
    size_t bytes = 0;
    for (const std::string& k : ikeys) {
      block.Add(k, Value());
      bytes += k.size() + Value().size();
      if (bytes >= 4096) break;
    }
    out.clear();
    benchmark::DoNotOptimize(kvstore::sstable::AppendBlock(block.Finish(), compression, 0, &out));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 4096);
}
BENCHMARK(BM_BlockEncode)->Arg(0)->Arg(1)->ArgName("lz4");

void BM_BlockDecode(benchmark::State& state) {
  size_t entries = 0;
  auto contents = std::make_shared<const kvstore::sstable::BlockContents>(SortedBlock(&entries));
  for (auto _ : state) {
    kvstore::sstable::BlockIterator it(contents, kvstore::CompareInternalKeys);
    size_t n = 0;
    for (it.SeekToFirst(); it.Valid(); it.Next()) n++;
    benchmark::DoNotOptimize(n);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * entries));
}
BENCHMARK(BM_BlockDecode);

void BM_BlockSeek(benchmark::State& state) {
  size_t entries = 0;
  auto contents = std::make_shared<const kvstore::sstable::BlockContents>(SortedBlock(&entries));
  std::string keys = MakeKeys(1024, 12);
  std::vector<std::string> targets;
  for (size_t i = 0; i < 1024; i++) {
    targets.emplace_back();
    kvstore::AppendInternalKey(&targets.back(), KeyAt(keys, i), kvstore::kMaxSequenceNumber, kvstore::kValueTypeForSeek);
  }
  kvstore::sstable::BlockIterator it(contents, kvstore::CompareInternalKeys);
  size_t i = 0;
  for (auto _ : state) {
    it.Seek(targets[i++ % targets.size()]);
    benchmark::DoNotOptimize(it.Valid());
  }
}
BENCHMARK(BM_BlockSeek);

void BM_BloomBuild(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::string keys = MakeKeys(n, 13);
  for (auto _ : state) {
    kvstore::sstable::BloomBuilder b(10);
    for (size_t i = 0; i < n; i++) b.Add(KeyAt(keys, i));
    benchmark::DoNotOptimize(b.Finish());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK(BM_BloomBuild)->Arg(10000);

// Probes of keys that are in the filter (hit) or not (miss: the case the
// filter exists for).
void BM_BloomProbe(benchmark::State& state) {
  const size_t n = 100000;
  std::string keys = MakeKeys(n, 13), others = MakeKeys(n, 14);
  kvstore::sstable::BloomBuilder b(10);
  for (size_t i = 0; i < n; i++) b.Add(KeyAt(keys, i));
  const std::string filter = b.Finish();
  const std::string& probe = state.range(0) ? keys : others;
  size_t i = 0, maybe = 0;
  for (auto _ : state) maybe += kvstore::sstable::BloomMayContain(filter, KeyAt(probe, i++ % n));
  state.counters["may_contain"] = static_cast<double>(maybe) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_BloomProbe)->Arg(1)->Arg(0)->ArgName("present");

const std::string kSetRequest = R"({"id":17,"op":"set","key":"user:0000000042","value":"a value of about one hundred bytes, as kvbench sends them, padded out to length...."})";
const std::string kBulkRequest = [] {
  std::string s = R"({"op":"bulk_set","items":[)";
  for (int i = 0; i < 100; i++) s += std::string(i ? "," : "") + R"(["key)" + std::to_string(i) + R"(",{"n":)" + std::to_string(i) + R"(,"tags":["a","b"]}])";
  return s + "]}";
}();

void BM_RequestParseFast(benchmark::State& state) {
  kvstore::net::FastRequest r;
  for (auto _ : state) benchmark::DoNotOptimize(kvstore::net::ParseFastRequest(kSetRequest, &r));
}
BENCHMARK(BM_RequestParseFast);

// The full parser, as requests off the fast path take it.
void BM_RequestParseJson(benchmark::State& state) {
  const std::string& line = state.range(0) ? kBulkRequest : kSetRequest;
  for (auto _ : state) benchmark::DoNotOptimize(nlohmann::json::parse(line));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * line.size()));
}
BENCHMARK(BM_RequestParseJson)->Arg(0)->Arg(1)->ArgName("bulk100");

// Serializing a response: a get's value and a scan page of 100 items.
void BM_ResponseSerialize(benchmark::State& state) {
  nlohmann::json response = {{"id", 17}, {"ok", true}, {"result", nullptr}};
  if (state.range(0)) {
    nlohmann::json items = nlohmann::json::array();
    for (int i = 0; i < 100; i++) items.push_back({{"key", "key" + std::to_string(i)}, {"value", Value()}});
    response["result"] = {{"items", items}, {"more", false}};
  } else {
    response["result"] = Value();
  }
  for (auto _ : state) benchmark::DoNotOptimize(response.dump());
}
BENCHMARK(BM_ResponseSerialize)->Arg(0)->Arg(1)->ArgName("scan100");

}  // namespace

BENCHMARK_MAIN();
