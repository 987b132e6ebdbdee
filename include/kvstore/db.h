// DB: the embedded key-value store.
//
//   std::unique_ptr<kvstore::DB> db;
//   kvstore::Status s = kvstore::DB::Open(kvstore::Options{}, "/path/to/dir", &db);
//   s = db->Put(kvstore::WriteOptions{}, "key", "value");
//
// Thread safety: any number of threads may call any method of one DB at
// once, with no external locking. Reads never wait for writes. Concurrent
// writes are committed in groups that share one WAL write and one fdatasync.
//
// Ownership: one process owns a data directory at a time. Open takes a lock
// (flock on <dir>/LOCK); a second Open of the same directory, from this
// process or another, fails with Status::Busy until the first DB is deleted.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/iterator.h"
#include "kvstore/options.h"
#include "kvstore/search.h"
#include "kvstore/status.h"
#include "kvstore/write_batch.h"

namespace kvstore {

// A consistent read view, from DB::GetSnapshot. Opaque; release it with
// DB::ReleaseSnapshot.
class Snapshot {
 public:
  uint64_t sequence() const { return sequence_; }

 protected:
  explicit Snapshot(uint64_t sequence) : sequence_(sequence) {}
  ~Snapshot() = default;

 private:
  const uint64_t sequence_;
};

// Counters and sizes, as of the call.
struct LevelStats {
  uint64_t files = 0;
  uint64_t bytes = 0;
};

struct DBStats {
  uint64_t sequence = 0;           // sequence number of the newest visible write
  uint64_t memtable_bytes = 0;     // all memtables, active and immutable
  uint64_t immutable_memtables = 0;  // waiting for a flush
  uint64_t wal_bytes = 0;          // all live WAL segments
  uint64_t wal_segments = 0;
  uint64_t live_keys_estimate = 0;  // exact in one memtable; tables add every entry they hold
  uint64_t writes = 0;             // batches committed since Open
  uint64_t write_groups = 0;       // WAL appends (one per group of batches)
  uint64_t wal_syncs = 0;          // fdatasync calls on the WAL
  uint64_t snapshots = 0;          // currently held
  bool read_only = false;          // writes refused after an unrecoverable error
  std::string read_only_reason;    // why, when read_only

  std::vector<LevelStats> levels;  // one per level, L0 first
  uint64_t user_bytes_written = 0;        // keys + values handed to Write
  uint64_t flush_bytes_written = 0;       // tables written by flushes
  uint64_t compaction_bytes_read = 0;
  uint64_t compaction_bytes_written = 0;
  double write_amplification = 0;         // (flush + compaction bytes) / user bytes
  uint64_t flushes = 0;
  uint64_t compactions = 0;
  uint64_t reads = 0;                     // Get calls
  uint64_t tables_probed = 0;             // tables read by Gets (past their filters)
  uint64_t block_cache_hits = 0;
  uint64_t block_cache_misses = 0;
  uint64_t block_cache_bytes = 0;         // in use
  uint64_t table_memory_bytes = 0;        // index and filter blocks of open tables
  uint64_t open_tables = 0;
  uint64_t stall_count = 0;               // writes slowed down or stopped
  uint64_t stall_micros = 0;              // time writes spent stalled
  uint64_t max_stall_micros = 0;          // the longest single stall
  std::string background_error;           // last flush/compaction failure, if any

  // Search indexes (all zero when Options::search is off).
  bool search_enabled = false;
  uint64_t index_vector_dimension = 0;    // the semantic index's (what a put's vector must have); 0: none
  uint64_t index_segments = 0;            // index segments held in memory
  uint64_t index_segment_bytes = 0;       // their memory
  uint64_t index_segments_built = 0;      // by flushes, compactions and open since Open
  uint64_t index_docs_built = 0;          // docs written into those segments
  uint64_t index_build_micros = 0;        // time spent building them
  // Background embedding, for an embedder that is not synchronous (the
  // HTTP one): docs written but not yet findable by semantic search (the
  // service was slow or down), docs embedded since Open, failed attempts
  // and the newest failure, and segments rewritten to add vectors.
  uint64_t index_embedding_backlog = 0;
  uint64_t index_docs_embedded = 0;
  uint64_t index_embedding_errors = 0;
  std::string index_embedding_last_error;
  uint64_t index_vector_rewrites = 0;
};

// What DB::Repair found and did.
struct RepairStats {
  uint64_t tables = 0;             // tables the new manifest lists (all in L0)
  uint64_t tables_salvaged = 0;    // damaged tables rewritten from their readable blocks
  uint64_t logs_replayed = 0;      // WAL segments written out as tables
  uint64_t entries_recovered = 0;  // entries in those tables
  uint64_t damaged_files = 0;      // tables and WAL segments with damage
  uint64_t files_moved = 0;        // into <dir>/lost/: damaged tables, WAL segments, old manifests
};

class DB {
 public:
  // Opens (or, with options.create_if_missing, creates) the store in the
  // directory at path, replaying its WAL. On success *db owns the store.
  static Status Open(const Options& options, const std::string& path, std::unique_ptr<DB>* db);

  // Rebuilds the store at path from what can still be read, for when Open
  // reports a damaged table or manifest: every WAL segment becomes a table
  // (damaged records skipped), a damaged table is rewritten from its
  // readable blocks, and a fresh manifest lists every table in L0. What is
  // replaced goes to <path>/lost/. Takes the lock, so the store must not be
  // open. Back the directory up first: damaged data is lost for good.
  static Status Repair(const Options& options, const std::string& path, RepairStats* stats = nullptr);

  DB() = default;
  DB(const DB&) = delete;
  DB& operator=(const DB&) = delete;
  // Waits for queued asynchronous writes (their callbacks run), then closes.
  // No other thread may be inside a call on this DB; every iterator must be
  // deleted and every snapshot released first.
  virtual ~DB() = default;

  virtual Status Put(const WriteOptions& options, std::string_view key, std::string_view value) = 0;
  // Deleting a missing key is not an error.
  virtual Status Delete(const WriteOptions& options, std::string_view key) = 0;
  // Applies every entry of the batch, or none. Blocks until the batch is
  // durable (options.sync) or at least handed to the operating system.
  // The DB stamps the batch with its sequence number.
  virtual Status Write(const WriteOptions& options, WriteBatch* batch) = 0;

  // Queues the batch and returns at once. The callback runs exactly once,
  // with OK when the batch is durable (as Write) and visible to readers, or
  // with the error that failed it. It runs on whichever thread committed the
  // batch's group: the DB's committer thread, or a thread inside a
  // concurrent Write call; an invalid batch or a read-only store calls it at
  // once, on the calling thread. Other writes may wait on it, so it must be
  // quick, must not throw, and must not block on another write of this DB.
  using WriteCallback = std::function<void(Status)>;
  virtual void WriteAsync(const WriteOptions& options, WriteBatch batch, WriteCallback callback) = 0;

  // On success fills *value. Status::NotFound when the key has no value.
  virtual Status Get(const ReadOptions& options, std::string_view key, std::string* value) = 0;

  // The caller owns the iterator and must delete it before the DB.
  virtual std::unique_ptr<Iterator> NewIterator(const ReadOptions& options) = 0;

  // A view that later writes do not change. Release it when done; a held
  // snapshot keeps old versions alive.
  virtual const Snapshot* GetSnapshot() = 0;
  virtual void ReleaseSnapshot(const Snapshot* snapshot) = 0;

  // Writes the memtable out as a table now and waits for it.
  virtual Status Flush() = 0;
  // Compacts every level's tables overlapping [begin, end] (empty strings:
  // unbounded) down to the last level that has data, dropping overwritten
  // versions and deletions nobody can see. Waits for it.
  virtual Status CompactRange(std::string_view begin, std::string_view end) = 0;
  // A consistent copy of the store in dir (which must not exist, on the same
  // file system): hard links to the tables, copies of the live WAL segments
  // and a manifest of their own. dir opens as a DB.
  virtual Status Checkpoint(const std::string& dir) = 0;

  // Searches (kvstore/search.h). Status::NotSupported unless the DB was
  // opened with options.search.enabled (and, for semantic search,
  // options.search.semantic). Results are best first (exact: key order).
  virtual Status SearchByValue(std::string_view value, const ValueSearchOptions& options,
                               std::vector<SearchHit>* hits) = 0;
  virtual Status FullTextSearch(std::string_view query, const FullTextOptions& options,
                                std::vector<SearchHit>* hits) = 0;
  // The query text goes through the DB's embedder.
  virtual Status SemanticSearch(std::string_view text, const SemanticOptions& options,
                                std::vector<SearchHit>* hits) = 0;
  // A vector the caller embedded with the same model as the DB's embedder
  // (Status::InvalidArgument when its dimension differs); it is normalised
  // here.
  virtual Status SemanticSearchByVector(const std::vector<float>& vector, const SemanticOptions& options,
                                        std::vector<SearchHit>* hits) = 0;

  virtual DBStats GetStats() = 0;
  // Named properties as text: "kvstore.stats" (all of DBStats, one per
  // line), or any one field as "kvstore.<field>", e.g. "kvstore.wal_bytes".
  // Returns false for an unknown name.
  virtual bool GetProperty(std::string_view name, std::string* value) = 0;
};

}  // namespace kvstore
