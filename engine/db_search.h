// DBSearch: the DB's side of the search indexes (index/). It analyses the
// values written, keeps each memtable's index, writes an index segment
// beside every table a flush or compaction writes (NNNNNN.idx, see
// docs/format/index.md), holds the live segments in memory, and answers
// queries over the memtables and segments of one view.
//
// Thread safety: every method may be called concurrently, except where a
// comment names the one caller.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/compaction/compaction.h"
#include "engine/version/version_set.h"
#include "index/segment.h"  // AnalyzedDoc, in the writers' queue entries
#include "kvstore/env.h"
#include "kvstore/options.h"
#include "kvstore/search.h"
#include "kvstore/status.h"
#include "kvstore/write_batch.h"

namespace kvstore {

class Embedder;
class MemTable;

namespace index {
class MemIndex;
}  // namespace index

std::string IndexFileName(const std::string& dbname, uint64_t number);
bool ParseIndexFileName(std::string_view name, uint64_t* number);

class DBSearch {
 public:
  static Status Create(const Options& options, Env* env, const std::string& dbname,
                       std::unique_ptr<DBSearch>* out);
  ~DBSearch();

  // What a batch contributes to the indexes, analysed on the writer's own
  // thread before it queues, so that concurrent writers analyse in parallel
  // and the write leader only files the results.
  struct BatchDocs {
    std::vector<index::AnalyzedDoc> docs;  // seq holds the entry's position in the batch
  };
  void AnalyzeBatch(const WriteBatch& batch, BatchDocs* out) const;
  // Files a committed batch's docs into the memtable's index, with the
  // batch's first sequence number. Write leader only.
  static void AddToMemIndex(BatchDocs* docs, uint64_t first_seq, MemTable* mem);
  // Analyses and files a batch in one go (WAL replay).
  void IndexReplayedBatch(const WriteBatch& batch, MemTable* mem) const;

  // Gives a new memtable its (empty) index.
  void AttachMemIndex(MemTable* mem) const;

  // Companions for the tables a flush of mem writes (docs analysed already
  // are taken from mem's index) and for a compaction's outputs (docs taken
  // from the inputs' segments).
  SidecarFactory ForFlush(std::shared_ptr<MemTable> mem);
  SidecarFactory ForCompaction(const Compaction& c);

  // Makes sure every table of v has a segment built with the current
  // configuration, building the missing or stale ones from their tables
  // (at open, after a configuration change or a lost sidecar).
  Status EnsureSegments(const Version& v, TableCache* tables);
  // Forgets table `number`'s segment (its table is gone).
  void Evict(uint64_t number);

  // Reads whether (key, seq) is the newest version visible, and its value.
  using LiveCheck = std::function<Status(std::string_view key, uint64_t seq, bool* live, std::string* value)>;

  // The queries, over the given memtables and version, at sequence seq.
  Status SearchByValue(const std::vector<const MemTable*>& mems, const Version& v, uint64_t seq,
                       std::string_view value, const ValueSearchOptions& options, const LiveCheck& live,
                       std::vector<SearchHit>* hits);
  Status FullTextSearch(const std::vector<const MemTable*>& mems, const Version& v, uint64_t seq,
                        std::string_view query, const FullTextOptions& options, const LiveCheck& live,
                        std::vector<SearchHit>* hits);
  Status SemanticSearch(const std::vector<const MemTable*>& mems, const Version& v, uint64_t seq,
                        std::string_view text, const std::vector<float>* vector, const SemanticOptions& options,
                        const LiveCheck& live, std::vector<SearchHit>* hits);

  bool semantic() const { return embedder_ != nullptr; }

  struct Stats {
    uint64_t segments = 0;
    uint64_t segment_bytes = 0;   // in memory
    uint64_t segments_built = 0;  // by flushes, compactions and EnsureSegments
    uint64_t docs_indexed = 0;    // into segments
    uint64_t build_micros = 0;
  };
  Stats GetStats() const;
  // Bytes held by a memtable's index (counted against the memtable budget).
  static size_t MemIndexBytes(const MemTable& mem);

 private:
  class Sidecar;
  DBSearch(Env* env, std::string dbname);

  bool Indexed(std::string_view key) const;
  Status AnalyzeOne(std::string_view key, uint64_t seq, std::string_view value, index::AnalyzedDoc* doc) const;
  // The segment of table `number`, loading it when it is not held yet.
  Status GetSegment(uint64_t number, std::shared_ptr<index::Segment>* out);
  Status LoadSegment(uint64_t number, std::shared_ptr<index::Segment>* out);
  Status Sources(const std::vector<const MemTable*>& mems, const Version& v,
                 std::vector<std::shared_ptr<index::Segment>>* pinned,
                 std::vector<const index::IndexSource*>* sources);
  void RecordBuild(uint64_t docs, uint64_t micros);

  Env* const env_;
  const std::string dbname_;
  std::unique_ptr<index::IndexConfig> config_;
  std::string fingerprint_;
  std::unique_ptr<index::Analyzer> analyzer_;
  std::shared_ptr<Embedder> embedder_;  // null: no semantic index
  std::vector<std::string> excluded_prefixes_;

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<index::Segment>> segments_;  // guarded by mu_
  uint64_t segments_built_ = 0, docs_indexed_ = 0, build_micros_ = 0;      // guarded by mu_
};

}  // namespace kvstore
