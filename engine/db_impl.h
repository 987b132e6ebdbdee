// DBImpl coordinates the write queue, the WAL, the memtables, flushes and
// compactions, and recovery. The work itself lives in engine/wal,
// engine/memtable, engine/sstable, engine/version and engine/compaction.
//
// Concurrency, in four parts:
//   - The write queue (queue_mu_): writers enqueue; one of them, or the
//     committer thread for WriteAsync, is the leader. The leader takes a
//     group from the front, writes it to the WAL with one append and at most
//     one fdatasync, inserts it into the memtable, publishes the new last
//     sequence, and acknowledges the group. State marked "leader only" is
//     touched by whichever thread holds leadership, never by two at once.
//   - mu_ guards the current view (memtables + version, replaced as a
//     whole), the snapshot list, the background state and the error that
//     made the store read-only. It is held only for pointer swaps and
//     bookkeeping, never across I/O.
//   - One background thread flushes immutable memtables and runs
//     compactions; it alone calls VersionSet::LogAndApply (Checkpoint and
//     Flush/CompactRange ask it, or wait for it, through mu_).
//   - Readers load last_sequence_ (acquire), then the view, and read the
//     memtables lock-free and the tables through the caches.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/coding/internal_key.h"
#include "engine/compaction/compaction.h"
#include "engine/db_search.h"
#include "engine/memtable/memtable.h"
#include "engine/sstable/block_cache.h"
#include "engine/version/table_cache.h"
#include "engine/version/version_set.h"
#include "engine/wal/log_writer.h"
#include "kvstore/db.h"
#include "kvstore/env.h"

namespace kvstore {

class DBImpl final : public DB {
 public:
  DBImpl(const Options& options, std::string dbname);
  ~DBImpl() override;

  // Called once by DB::Open before the DB is shared.
  Status Open();

  Status Put(const WriteOptions& options, std::string_view key, std::string_view value) override;
  Status Delete(const WriteOptions& options, std::string_view key) override;
  Status Write(const WriteOptions& options, WriteBatch* batch) override;
  void WriteAsync(const WriteOptions& options, WriteBatch batch, WriteCallback callback) override;
  Status Get(const ReadOptions& options, std::string_view key, std::string* value) override;
  std::unique_ptr<Iterator> NewIterator(const ReadOptions& options) override;
  const Snapshot* GetSnapshot() override;
  void ReleaseSnapshot(const Snapshot* snapshot) override;
  Status Flush() override;
  Status CompactRange(std::string_view begin, std::string_view end) override;
  Status Checkpoint(const std::string& dir) override;
  Status SearchByValue(std::string_view value, const ValueSearchOptions& options,
                       std::vector<SearchHit>* hits) override;
  Status FullTextSearch(std::string_view query, const FullTextOptions& options,
                        std::vector<SearchHit>* hits) override;
  Status SemanticSearch(std::string_view text, const SemanticOptions& options,
                        std::vector<SearchHit>* hits) override;
  Status SemanticSearchByVector(const std::vector<float>& vector, const SemanticOptions& options,
                                std::vector<SearchHit>* hits) override;
  DBStats GetStats() override;
  bool GetProperty(std::string_view name, std::string* value) override;

 private:
  struct Writer;
  class SnapshotImpl;

  // What readers consult: the memtables, newest first, and the tables.
  // Replaced, never mutated.
  struct View {
    std::shared_ptr<MemTable> mem;
    std::vector<std::shared_ptr<MemTable>> imm;  // newest first; waiting for a flush
    std::shared_ptr<const Version> version;
  };

  Status Recover();
  // Replays one WAL segment into mem_. Damage it may survive is reported,
  // not repaired: *cut_at is where a torn (or, best-effort, damaged) tail
  // begins; *set_aside means best-effort recovery skips the whole segment.
  Status ReplayLog(uint64_t number, bool is_last, SequenceNumber* max_sequence,
                   std::optional<uint64_t>* cut_at, bool* set_aside);
  Status TruncateDurably(const std::string& path, uint64_t size);
  // Creates segment `number` and makes it the one writes go to.
  Status NewLogSegment(uint64_t number);

  // force_rotate: the (empty) batch asks the leader to rotate the memtable.
  Status WriteInternal(const WriteOptions& options, WriteBatch* batch, bool force_rotate);
  void LeadLocked(std::unique_lock<std::mutex>& lock, Writer* self);
  // Commits one group; *finished receives its writers, to be signalled (or
  // called back) once queue_mu_ is released.
  void CommitGroupLocked(std::unique_lock<std::mutex>& lock, std::vector<Writer*>* finished);
  Status WriteGroup(const std::vector<Writer*>& group, bool sync);  // leader only, no locks
  // force: rotate even an unfilled memtable (Flush).
  Status MakeRoomForWrite(bool force);                                // leader only
  void CommitterLoop();
  void SetReadOnly(const Status& reason);
  Status ReadOnlyError();

  // Background work.
  void BackgroundLoop();
  bool NeedsCompactionLocked() const;
  Status FlushOldestImmutable();
  Status RunOneCompaction(std::unique_ptr<Compaction> c);
  void InstallVersionLocked(std::shared_ptr<const Version> version, bool drop_oldest_imm);
  void DeleteObsoleteFiles();
  // A flush or compaction output that never made it into the manifest: its
  // table, its index segment and the segment held in memory.
  void RemoveUnusedOutput(uint64_t number);
  SequenceNumber SmallestSnapshot();
  uint64_t NewOutputFileNumber();
  // Waits until no immutable memtable is left (or background work fails).
  Status WaitForFlushLocked(std::unique_lock<std::mutex>& lock);
  // The slowdown and stop conditions of MakeRoomForWrite: returns OK when
  // the write may go on, or the error that keeps it from going on.
  Status WaitForRoomLocked(std::unique_lock<std::mutex>& lock, bool force);
  void RecordStallLocked(uint64_t micros);

  // The current view, and the sequence to read it at (the snapshot's, or
  // the newest published).
  std::shared_ptr<const View> CurrentView(const Snapshot* snapshot, SequenceNumber* sequence);
  // The newest entry of key at sequence seq in view: OK with *found_seq
  // and *value, or NotFound (absent or deleted).
  Status GetFromView(const View& view, SequenceNumber seq, std::string_view key, std::string* value,
                     SequenceNumber* found_seq);
  // A memtable's bytes, its search index included.
  static size_t MemBytes(const MemTable& mem) { return mem.MemoryUsage() + DBSearch::MemIndexBytes(mem); }
  // Runs a search over the view of a snapshot (or the newest state).
  template <typename Fn>
  Status RunSearch(const Snapshot* snapshot, Fn&& fn);

  // Constant after construction.
  const Options options_;
  Env* const env_;
  const std::string dbname_;
  const CompactionOptions compaction_options_;
  std::unique_ptr<FileLock> db_lock_;
  std::unique_ptr<sstable::BlockCache> block_cache_;
  std::unique_ptr<TableCache> table_cache_;
  std::unique_ptr<VersionSet> versions_;
  std::unique_ptr<DBSearch> search_;  // null unless options.search.enabled
  // What a client-supplied vector must have (0: no vector is accepted).
  size_t VectorDimension() const { return search_ != nullptr ? search_->dimension() : 0; }

  // Write queue.
  std::mutex queue_mu_;
  std::deque<Writer*> writers_;           // guarded by queue_mu_
  bool leader_active_ = false;            // guarded by queue_mu_
  int leaders_running_ = 0;               // guarded by queue_mu_: threads inside LeadLocked
  bool committer_should_lead_ = false;    // guarded by queue_mu_
  bool committer_stop_ = false;           // guarded by queue_mu_
  std::condition_variable committer_cv_;  // committer waits for leadership
  std::condition_variable idle_cv_;       // shutdown waits for an empty queue
  std::condition_variable group_cv_;      // a leader waits for its group to fill
  bool leader_waiting_ = false;           // guarded by queue_mu_
  size_t last_group_size_ = 0;            // guarded by queue_mu_
  uint64_t group_io_ewma_ns_ = 0;         // guarded by queue_mu_: WAL append (+ sync) time
  std::thread committer_;

  // Leader only (and Open, before any writer exists).
  std::unique_ptr<wal::LogWriter> log_;
  uint64_t log_number_ = 0;  // log_'s file number
  MemTable* mem_ = nullptr;  // == view_->mem
  std::vector<std::string_view> records_;  // scratch for one group
  std::vector<Writer*> group_;             // scratch for one group

  // Published by the leader, read by everyone.
  std::atomic<SequenceNumber> last_sequence_{0};
  std::atomic<uint64_t> wal_bytes_current_{0};
  std::atomic<uint64_t> wal_number_current_{0};
  std::atomic<uint64_t> stat_writes_{0};
  std::atomic<uint64_t> stat_groups_{0};
  std::atomic<uint64_t> stat_syncs_{0};
  std::atomic<uint64_t> stat_user_bytes_{0};
  std::atomic<uint64_t> stat_reads_{0};
  std::atomic<uint64_t> stat_tables_probed_{0};
  std::atomic<bool> read_only_{false};

  // Guarded by mu_.
  std::mutex mu_;
  std::shared_ptr<const View> view_;
  std::list<SnapshotImpl*> snapshots_;
  Status read_only_reason_;
  std::map<uint64_t, uint64_t> closed_wal_sizes_;  // closed live WAL segments: number -> bytes
  std::condition_variable bg_cv_;        // wakes the background thread
  std::condition_variable bg_done_cv_;   // a flush or compaction finished
  bool shutting_down_ = false;
  bool bg_running_ = true;
  std::set<uint64_t> pending_outputs_;   // tables being written: not orphans
  CompactPointers compact_pointers_;
  struct ManualCompaction {
    int level;
    bool in_place = false;
    bool ran = false;  // a compaction was found and run
    std::string begin, end;
    bool done = false;
    Status status;
  };
  std::deque<ManualCompaction*> manual_compactions_;
  int checkpoints_in_progress_ = 0;      // file deletion waits while > 0
  Status bg_error_;                      // last background failure
  uint64_t bg_attempts_ = 0;             // background jobs finished (either way)
  uint64_t flushes_ = 0, compactions_ = 0;
  uint64_t flush_bytes_ = 0, compaction_bytes_read_ = 0, compaction_bytes_written_ = 0;
  uint64_t stall_count_ = 0, stall_micros_ = 0, max_stall_micros_ = 0;
  std::thread background_;
};

}  // namespace kvstore
