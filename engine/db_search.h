// DBSearch: the DB's side of the search indexes (index/). It analyses the
// values written, keeps each memtable's index, writes an index segment
// beside every table a flush or compaction writes (NNNNNN.idx, see
// docs/format/index.md), holds the live segments in memory, and answers
// queries over the memtables and segments of one view.
//
// Thread safety: every method may be called concurrently, except where a
// comment names the one caller.
//
// An embedder that is not synchronous() (the HTTP one) is never called on a
// write, a flush or a compaction. Writes are indexed without vectors; their
// (key, seq) wait in a backlog that a background thread embeds in batches,
// reading each value back (a doc already overwritten or deleted is skipped).
// A vector goes into the memtable's index when the doc is still there
// (MemIndex::SetVector), else into the doc's segment, which is rewritten
// with the vectors filled in. Until a vector is in a segment of the current
// version, and no flush or compaction that might have copied the doc
// without it is running, it stays in the backlog's map, where every segment
// writer looks for the vectors its docs lack. On open, docs in segments
// with text and no vector, and the WAL replay, refill the backlog.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
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
  // With two cores or more, big batches are analysed by the writer and a
  // helper thread together (the writer still returns only when all is done).
  void AnalyzeBatch(const WriteBatch& batch, BatchDocs* out) const;
  // Files a committed batch's docs into the memtable's index, with the
  // batch's first sequence number. Write leader only.
  void AddToMemIndex(BatchDocs* docs, uint64_t first_seq, MemTable* mem);
  // Analyses and files a batch in one go (WAL replay).
  void IndexReplayedBatch(const WriteBatch& batch, MemTable* mem);

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

  // What the background embedder needs of the DB: one consistent view of
  // the memtables and tables, and reads of the newest versions.
  struct Host {
    std::function<void(std::vector<std::shared_ptr<MemTable>>* mems, std::shared_ptr<const Version>* version)> view;
    LiveCheck live;
  };
  // For an embedder that is not synchronous: refills the backlog from the
  // segments of the current version and starts the embedding thread. Open
  // only, after EnsureSegments; a no-op for a synchronous embedder.
  Status StartEmbedding(Host host);
  // Stops the thread (waiting for an Embed call in progress). Before the
  // DB's state goes away; the destructor calls it too.
  void StopEmbedding();
  // Bracket every flush and compaction, from before its SidecarFactory is
  // made until its version is installed or it failed: the backlog keeps a
  // vector while a rewrite may be copying its doc without it.
  void BeginRewrite();
  void EndRewrite();

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
  // The semantic index's dimension; 0 without one.
  size_t dimension() const { return config_->dimension > 0 && embedder_ != nullptr ? static_cast<size_t>(config_->dimension) : 0; }
  bool background_embedding() const { return async_; }

  struct Stats {
    uint64_t segments = 0;
    uint64_t segment_bytes = 0;   // in memory
    uint64_t segments_built = 0;  // by flushes, compactions and EnsureSegments
    uint64_t docs_indexed = 0;    // into segments
    uint64_t build_micros = 0;
    uint64_t embedding_backlog = 0;    // docs whose vectors are not searchable yet
    uint64_t docs_embedded = 0;        // by the background embedder
    uint64_t embedding_errors = 0;     // failed Embed calls of the background embedder
    std::string embedding_last_error;  // the newest of them
    uint64_t vector_rewrites = 0;      // segments rewritten to add vectors
  };
  Stats GetStats() const;
  // Bytes held by a memtable's index (counted against the memtable budget).
  static size_t MemIndexBytes(const MemTable& mem);

 private:
  class Sidecar;
  DBSearch(Env* env, std::string dbname);

  bool Indexed(std::string_view key) const;
  // One put of a batch being analysed (AnalyzeBatch).
  struct PendingPut;
  void AnalyzePut(const PendingPut& put, index::AnalyzedDoc* doc) const;
  struct AnalysisJob;
  void HelperLoop();
  // doc->vector = vector, normalised (cosine); left empty when it does not
  // fit the index.
  void SetClientVector(std::span<const float> vector, index::AnalyzedDoc* doc) const;
  // Without the vector when the embedder is not synchronous.
  Status AnalyzeOne(std::string_view key, uint64_t seq, std::string_view value, index::AnalyzedDoc* doc) const;
  // The segment of table `number`, loading it when it is not held yet.
  Status GetSegment(uint64_t number, std::shared_ptr<index::Segment>* out);
  Status LoadSegment(uint64_t number, std::shared_ptr<index::Segment>* out);
  // Runs query(sources, &found) over the memtables' indexes and v's
  // segments, and converts what it found.
  template <typename Query>
  Status OverSources(const std::vector<const MemTable*>& mems, const Version& v, std::vector<SearchHit>* hits,
                     Query&& query);
  Status Sources(const std::vector<const MemTable*>& mems, const Version& v,
                 std::vector<std::shared_ptr<index::Segment>>* pinned,
                 std::vector<const index::IndexSource*>* sources);
  void RecordBuild(uint64_t docs, uint64_t micros);
  // Writes a segment's bytes as table `number`'s index file and returns it
  // opened. replace: through a temporary file renamed over the old one.
  Status WriteSegmentFile(uint64_t number, index::SegmentWriter* writer, bool replace,
                          std::shared_ptr<index::Segment>* out);

  // The backlog (background embedding).
  using DocKey = std::pair<std::string, uint64_t>;
  struct DocKeyOrder {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      const int c = std::string_view(a.first).compare(std::string_view(b.first));
      return c != 0 ? c < 0 : a.second > b.second;
    }
  };
  struct PendingDoc {
    std::shared_ptr<const std::vector<float>> vector;  // null: not embedded yet
    bool searchable = false;                           // its vector is in the memtable index or a segment
  };
  // A segment writer's doc without a vector: fills it from the backlog, or
  // adds it to the backlog.
  void FillOrEnqueue(index::AnalyzedDoc* doc);
  void EnqueueLocked(std::string_view key, uint64_t seq);  // backlog_mu_ held
  void SetSearchableLocked(PendingDoc* p, bool searchable);
  void EmbedLoop();
  // Embeds up to one round from the front of to_embed_; false on failure
  // (counted, kept in embedding_last_error_).
  bool EmbedSome();
  // Puts embedded vectors where queries find them (into segments only when
  // rewrite); forgets those that are in a segment for good.
  void PlaceVectors(bool rewrite);
  Status RewriteWithVectors(uint64_t number);

  Env* const env_;
  const std::string dbname_;
  std::unique_ptr<index::IndexConfig> config_;
  std::string fingerprint_;
  std::unique_ptr<index::Analyzer> analyzer_;
  std::shared_ptr<Embedder> embedder_;  // null: no semantic index
  std::vector<std::string> excluded_prefixes_;
  bool async_ = false;                  // embedder_ is not synchronous()

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<index::Segment>> segments_;  // guarded by mu_
  uint64_t segments_built_ = 0, docs_indexed_ = 0, build_micros_ = 0;      // guarded by mu_
  int active_rewrites_ = 0;       // guarded by mu_
  uint64_t rewrite_epoch_ = 0;    // guarded by mu_; bumped when a rewrite begins or ends

  // The analysis helper (AnalyzeBatch): jobs of the writers, taken in turn.
  std::thread helper_thread_;
  mutable std::mutex helper_mu_;
  mutable std::condition_variable helper_cv_;
  mutable std::deque<std::shared_ptr<AnalysisJob>> helper_jobs_;  // guarded by helper_mu_
  bool helper_stop_ = false;                                      // guarded by helper_mu_

  Host host_;
  std::thread embed_thread_;
  mutable std::mutex backlog_mu_;  // never held across I/O or an Embed call
  std::condition_variable backlog_cv_;
  bool stop_ = false;                                       // guarded by backlog_mu_
  bool wake_ = false;                                       // guarded by backlog_mu_
  std::map<DocKey, PendingDoc, DocKeyOrder> pending_;       // guarded by backlog_mu_
  std::deque<DocKey> to_embed_;                             // guarded by backlog_mu_; no vector yet
  std::vector<DocKey> to_place_;                            // guarded by backlog_mu_; vector not final
  std::vector<DocKey> in_memtable_;  // guarded by backlog_mu_; placed in a memtable: looked at again after a flush
  uint64_t unsearchable_ = 0;                               // guarded by backlog_mu_
  uint64_t docs_embedded_ = 0, embedding_errors_ = 0, vector_rewrites_ = 0;  // guarded by backlog_mu_
  std::string embedding_last_error_;                        // guarded by backlog_mu_
};

}  // namespace kvstore
