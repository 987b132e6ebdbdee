// `kvbench search`: the three searches over N generated documents.
//
// Documents are a few dozen words drawn from a fixed vocabulary with a Zipf
// distribution (seeded, so every run builds the same corpus), stored as JSON
// strings, the way kvserver stores a string value. The run loads them twice,
// with indexing on and with it off, to price the indexes, then times
// exact, full-text (two terms, all must match) and semantic top-10 queries,
// and measures semantic recall@10 against brute-force cosine over the same
// embedder's vectors.
#include <CLI/CLI.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <map>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench/histogram.h"
#include "bench/search_bench.h"
#include "kvstore/db.h"
#include "kvstore/embedder.h"

namespace kvbench {

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// CPU seconds of the whole process (every thread): on a shared machine the
// wall clock measures the neighbours as much as us; CPU time per document
// prices the indexes whatever else runs.
double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// A vocabulary of pronounceable made-up words, so that stemming and the
// embedder see realistic shapes without a word-list file.
std::vector<std::string> Vocabulary(size_t n, std::mt19937_64& rng) {
  static const char* const kOnsets[] = {"b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t",
                                        "v", "br", "cl", "dr", "st", "tr", "sh", "ch", "pl", "gr"};
  static const char* const kVowels[] = {"a", "e", "i", "o", "u", "ai", "ea", "ou"};
  std::vector<std::string> words;
  std::set<std::string> seen;
  while (words.size() < n) {
    std::string w;
    const int syllables = 1 + static_cast<int>(rng() % 3);
    for (int i = 0; i < syllables; i++) {
      w += kOnsets[rng() % std::size(kOnsets)];
      w += kVowels[rng() % std::size(kVowels)];
    }
    if (rng() % 3 == 0) w += "s";
    if (seen.insert(w).second) words.push_back(w);
  }
  return words;
}

class Zipf {
 public:
  Zipf(size_t n, double s) : cdf_(n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) cdf_[i] = (sum += 1.0 / std::pow(static_cast<double>(i + 1), s));
    for (double& c : cdf_) c /= sum;
  }
  size_t operator()(std::mt19937_64& rng) const {
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    return std::min(static_cast<size_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin()),
                    cdf_.size() - 1);
  }

 private:
  std::vector<double> cdf_;
};

struct Corpus {
  std::vector<std::string> words;
  Zipf zipf{1, 1.0};
  std::string Doc(std::mt19937_64& rng) const {
    std::string text;
    const int n = 20 + static_cast<int>(rng() % 30);
    for (int i = 0; i < n; i++) {
      if (i > 0) text += ' ';
      text += words[zipf(rng)];
    }
    return text;
  }
};

std::string Key(uint64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "doc:%010llu", static_cast<unsigned long long>(i));
  return buf;
}

std::string JsonString(const std::string& text) { return "\"" + text + "\""; }  // words need no escaping

struct LoadResult {
  double seconds = 0;
  double cpu_seconds = 0;
  kvstore::DBStats stats;
};

kvstore::Status Load(const SearchBenchOptions& o, const std::string& dir, bool indexed, const Corpus& corpus,
                     LoadResult* result, std::unique_ptr<kvstore::DB>* keep) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(std::filesystem::path(dir).parent_path());
  kvstore::Options options;
  options.search.enabled = indexed;
  std::unique_ptr<kvstore::DB> db;
  kvstore::Status s = kvstore::DB::Open(options, dir, &db);
  if (!s.ok()) return s;
  std::mt19937_64 rng(o.seed);
  const auto start = Clock::now();
  const double cpu_start = CpuSeconds();
  kvstore::WriteOptions wo;
  wo.sync = false;
  for (uint64_t i = 0; i < o.docs && s.ok();) {
    kvstore::WriteBatch batch;
    for (uint64_t j = 0; j < o.batch && i < o.docs; j++, i++) batch.Put(Key(i), JsonString(corpus.Doc(rng)));
    s = db->Write(wo, &batch);
  }
  if (s.ok()) s = db->Flush();
  result->seconds = Seconds(Clock::now() - start);
  result->cpu_seconds = CpuSeconds() - cpu_start;
  result->stats = db->GetStats();
  if (keep != nullptr) *keep = std::move(db);
  return s;
}

void PrintLatency(const SearchBenchOptions& o, const char* query, const Histogram& h, double extra_value,
                  const char* extra_name) {
  if (o.json) {
    std::printf("{\"engine\":\"kvstore\",\"query\":\"%s\",\"docs\":%llu,\"queries\":%llu,\"p50_us\":%.1f,"
                "\"p99_us\":%.1f",
                query, static_cast<unsigned long long>(o.docs), static_cast<unsigned long long>(h.count()),
                h.Percentile(0.5) / 1e3, h.Percentile(0.99) / 1e3);
    if (extra_name != nullptr) std::printf(",\"%s\":%.4f", extra_name, extra_value);
    std::printf("}\n");
  } else {
    std::printf("%-10s %8llu docs %6llu queries  p50 %9.1f us  p99 %9.1f us", query,
                static_cast<unsigned long long>(o.docs), static_cast<unsigned long long>(h.count()),
                h.Percentile(0.5) / 1e3, h.Percentile(0.99) / 1e3);
    if (extra_name != nullptr) std::printf("  %s %.4f", extra_name, extra_value);
    std::printf("\n");
  }
  std::fflush(stdout);
}

}  // namespace

int RunSearchBench(const SearchBenchOptions& o) {
  std::mt19937_64 vocab_rng(o.seed ^ 0x5eed);
  Corpus corpus;
  corpus.words = Vocabulary(o.vocabulary, vocab_rng);
  corpus.zipf = Zipf(corpus.words.size(), 1.0);

  // Indexing off first, so that the page cache and the CPU are in the same
  // state for both loads as far as we can make them.
  LoadResult plain, indexed;
  std::unique_ptr<kvstore::DB> db;
  kvstore::Status s;
  if (!o.skip_plain) {
    s = Load(o, o.db + "/plain", false, corpus, &plain, nullptr);
    std::filesystem::remove_all(o.db + "/plain");
    if (!s.ok()) {
      std::fprintf(stderr, "kvbench search: load without indexes: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  s = Load(o, o.db + "/indexed", true, corpus, &indexed, &db);
  if (!s.ok()) {
    std::fprintf(stderr, "kvbench search: load with indexes: %s\n", s.ToString().c_str());
    return 1;
  }
  const double on_rate = o.docs / indexed.seconds;
  const double off_rate = o.skip_plain ? 0 : o.docs / plain.seconds;
  const kvstore::DBStats& st = indexed.stats;
  const double per_segment_ms =
      st.index_segments_built > 0 ? st.index_build_micros / 1e3 / st.index_segments_built : 0;
  const double per_doc_us = st.index_docs_built > 0 ? static_cast<double>(st.index_build_micros) / st.index_docs_built : 0;
  if (o.json) {
    std::printf("{\"engine\":\"kvstore\",\"phase\":\"write\",\"docs\":%llu,\"docs_per_sec_indexed\":%.0f,"
                "\"docs_per_sec_plain\":%.0f,\"indexing_cost\":%.3f,\"cpu_us_per_doc_indexed\":%.2f,"
                "\"cpu_us_per_doc_plain\":%.2f}\n",
                static_cast<unsigned long long>(o.docs), on_rate, off_rate,
                off_rate > 0 ? 1 - on_rate / off_rate : 0.0, 1e6 * indexed.cpu_seconds / o.docs,
                o.skip_plain ? 0.0 : 1e6 * plain.cpu_seconds / o.docs);
    std::printf("{\"engine\":\"kvstore\",\"phase\":\"build\",\"docs\":%llu,\"segments_built\":%llu,"
                "\"segments_live\":%llu,\"build_ms_per_segment\":%.2f,\"build_us_per_doc\":%.2f,"
                "\"segment_memory_bytes\":%llu,\"write_amplification\":%.2f}\n",
                static_cast<unsigned long long>(o.docs), static_cast<unsigned long long>(st.index_segments_built),
                static_cast<unsigned long long>(st.index_segments), per_segment_ms, per_doc_us,
                static_cast<unsigned long long>(st.index_segment_bytes), st.write_amplification);
  } else {
    std::printf("write      %8llu docs  indexed %.0f docs/s", static_cast<unsigned long long>(o.docs), on_rate);
    if (off_rate > 0) std::printf("  plain %.0f docs/s  indexing costs %.1f%%", off_rate, 100 * (1 - on_rate / off_rate));
    std::printf("\ncpu        indexed %.2f us/doc", 1e6 * indexed.cpu_seconds / o.docs);
    if (!o.skip_plain) std::printf("  plain %.2f us/doc (all threads)", 1e6 * plain.cpu_seconds / o.docs);
    // Where the wall-clock time beyond the CPU went: writers held back
    // because flushes or L0 fell behind.
    std::printf("\nstalls     indexed %llu (%.0f ms)", static_cast<unsigned long long>(st.stall_count),
                st.stall_micros / 1e3);
    if (!o.skip_plain) {
      std::printf("  plain %llu (%.0f ms)", static_cast<unsigned long long>(plain.stats.stall_count),
                  plain.stats.stall_micros / 1e3);
    }
    std::printf("\nbuild      %llu segments built (%llu live)  %.2f ms/segment  %.2f us/doc  %llu bytes in memory\n",
                static_cast<unsigned long long>(st.index_segments_built),
                static_cast<unsigned long long>(st.index_segments), per_segment_ms, per_doc_us,
                static_cast<unsigned long long>(st.index_segment_bytes));
  }
  std::fflush(stdout);

  std::mt19937_64 rng(o.seed ^ 0xa11ce);
  // Exact: values of random stored docs (regenerated from the same seed).
  {
    std::vector<std::string> values;
    std::mt19937_64 doc_rng(o.seed);
    std::vector<uint64_t> picks;
    for (uint64_t i = 0; i < o.queries; i++) picks.push_back(rng() % o.docs);
    std::sort(picks.begin(), picks.end());
    size_t next = 0;
    for (uint64_t i = 0; i < o.docs && next < picks.size(); i++) {
      std::string doc = corpus.Doc(doc_rng);
      while (next < picks.size() && picks[next] == i) {
        values.push_back(JsonString(doc));
        next++;
      }
    }
    std::shuffle(values.begin(), values.end(), rng);
    Histogram h;
    uint64_t misses = 0;
    std::vector<kvstore::SearchHit> hits;
    for (const std::string& v : values) {
      const auto t0 = Clock::now();
      s = db->SearchByValue(v, {}, &hits);
      h.Record(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
      if (!s.ok()) break;
      if (hits.empty()) misses++;
    }
    if (!s.ok() || misses > 0) {
      std::fprintf(stderr, "kvbench search: exact: %s, %llu stored values not found\n", s.ToString().c_str(),
                   static_cast<unsigned long long>(misses));
      return 1;
    }
    PrintLatency(o, "exact", h, 0, nullptr);
  }
  // Full text: two terms, both required, drawn by the same Zipf law as the
  // documents (so most queries have plenty of matches).
  {
    Histogram h;
    std::vector<kvstore::SearchHit> hits;
    kvstore::FullTextOptions fo;
    fo.limit = 10;
    uint64_t empty = 0;
    for (uint64_t i = 0; i < o.queries; i++) {
      const std::string query = corpus.words[corpus.zipf(rng)] + " " + corpus.words[corpus.zipf(rng)];
      const auto t0 = Clock::now();
      s = db->FullTextSearch(query, fo, &hits);
      h.Record(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
      if (!s.ok()) {
        std::fprintf(stderr, "kvbench search: fulltext: %s\n", s.ToString().c_str());
        return 1;
      }
      if (hits.empty()) empty++;
    }
    PrintLatency(o, "fulltext", h, static_cast<double>(o.queries - empty) / o.queries, "queries_with_hits");
  }
  // Semantic: top-10 for short generated texts; recall@10 against brute
  // force over the vectors of every doc (computed here, once).
  {
    std::shared_ptr<kvstore::Embedder> embedder = kvstore::NewHashingEmbedder();
    std::vector<std::string> queries;
    for (uint64_t i = 0; i < o.queries; i++) {
      std::string q;
      for (int w = 0; w < 4; w++) q += (w ? " " : "") + corpus.words[corpus.zipf(rng)];
      queries.push_back(q);
    }
    Histogram h;
    std::vector<std::vector<kvstore::SearchHit>> results(queries.size());
    kvstore::SemanticOptions so;
    so.k = 10;
    so.threshold = -1;
    for (size_t i = 0; i < queries.size(); i++) {
      const auto t0 = Clock::now();
      s = db->SemanticSearch(queries[i], so, &results[i]);
      h.Record(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
      if (!s.ok()) {
        std::fprintf(stderr, "kvbench search: semantic: %s\n", s.ToString().c_str());
        return 1;
      }
    }
    // Brute force over a subset of queries: embedding a million docs takes
    // a while, so it is done once, streaming, for all recall queries at once.
    const size_t recall_queries = std::min<size_t>(queries.size(), o.recall_queries);
    std::vector<std::vector<float>> qv;
    kvstore::Status es = embedder->Embed(std::vector<std::string_view>(queries.begin(), queries.begin() + recall_queries), &qv);
    if (!es.ok()) {
      std::fprintf(stderr, "kvbench search: embed: %s\n", es.ToString().c_str());
      return 1;
    }
    // Per query, the 10th best score over all docs, and the brute-force
    // score of each doc the index returned (a hit's own score is that of the
    // index's binary16 copy of the vector, within 2^-11 of this one, so it
    // cannot tell a near-tie at the 10th from a miss).
    std::vector<std::vector<double>> best(recall_queries);
    std::vector<std::map<std::string, double>> hit_truth(recall_queries);
    for (size_t q = 0; q < recall_queries; q++) {
      for (const auto& hit : results[q]) hit_truth[q][hit.key] = -2;  // not found below: a wrong key
    }
    std::mt19937_64 doc_rng(o.seed);
    std::vector<std::vector<float>> dv;
    // --recall-queries 0 skips the pass (profiling the load and queries alone).
    for (uint64_t i = 0; i < o.docs && recall_queries > 0; i++) {
      const std::string doc = JsonString(corpus.Doc(doc_rng));
      const std::string text = doc.substr(1, doc.size() - 2);
      es = embedder->Embed({text}, &dv);
      if (!es.ok()) return 1;
      const std::string key = Key(i);
      for (size_t q = 0; q < recall_queries; q++) {
        double dot = 0;
        for (size_t d = 0; d < dv[0].size(); d++) dot += static_cast<double>(qv[q][d]) * dv[0][d];
        if (auto it = hit_truth[q].find(key); it != hit_truth[q].end()) it->second = dot;
        auto& b = best[q];
        if (b.size() < 10) {
          b.push_back(dot);
          std::push_heap(b.begin(), b.end(), std::greater<>());
        } else if (dot > b.front()) {
          std::pop_heap(b.begin(), b.end(), std::greater<>());
          b.back() = dot;
          std::push_heap(b.begin(), b.end(), std::greater<>());
        }
      }
    }
    double recall = 0;
    for (size_t q = 0; q < recall_queries; q++) {
      const double tenth = best[q].empty() ? 0 : best[q].front();
      size_t found = 0;
      for (const auto& hit : results[q]) found += hit_truth[q][hit.key] >= tenth - 1e-9;
      recall += best[q].empty() ? 1.0 : std::min<double>(1.0, static_cast<double>(found) / best[q].size());
    }
    recall = recall_queries > 0 ? recall / recall_queries : 0;
    PrintLatency(o, "semantic", h, recall, "recall_at_10");
  }
  db.reset();
  if (!o.keep) std::filesystem::remove_all(o.db);
  return 0;
}

void AddSearchCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<SearchBenchOptions>();
  CLI::App* cmd = app.add_subcommand("search", "exact, full-text and semantic search over generated documents");
  cmd->add_option("--db", o->db, "scratch directory (wiped)")->capture_default_str();
  cmd->add_option("--docs", o->docs, "documents to load")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--queries", o->queries, "queries of each kind")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--recall-queries", o->recall_queries, "semantic queries checked against brute force")
      ->capture_default_str();
  cmd->add_option("--vocabulary", o->vocabulary, "distinct words")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--batch", o->batch, "documents per write batch")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--seed", o->seed)->capture_default_str();
  cmd->add_flag("--skip-plain", o->skip_plain, "do not load a second store without indexes");
  cmd->add_flag("--keep", o->keep, "keep the store afterwards");
  cmd->add_flag("--json", o->json, "one JSON object per line");
  cmd->callback([o, exit_code] { *exit_code = RunSearchBench(*o); });
}

}  // namespace kvbench
