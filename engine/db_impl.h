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
// queue_mu_ and mu_ are never held together. Members marked GUARDED_BY and
// functions marked REQUIRES / EXCLUDES are checked by clang's
// -Wthread-safety (the fuzz build, ctest label tsa); "leader only" and
// "background thread only" state is owned by a role, which the analysis
// cannot express, so it says so in a comment instead.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <list>
#include <map>
#include <memory>
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
#include "engine/sync/group_wake.h"
#include "engine/sync/mutex.h"
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
  Status Write(const WriteOptions& options, WriteBatch* batch) override EXCLUDES(queue_mu_);
  void WriteAsync(const WriteOptions& options, WriteBatch batch, WriteCallback callback) override
      EXCLUDES(queue_mu_);
  Status Get(const ReadOptions& options, std::string_view key, std::string* value) override;
  std::unique_ptr<Iterator> NewIterator(const ReadOptions& options) override;
  const Snapshot* GetSnapshot() override EXCLUDES(mu_);
  void ReleaseSnapshot(const Snapshot* snapshot) override EXCLUDES(mu_);
  Status Flush() override EXCLUDES(mu_, queue_mu_);
  Status CompactRange(std::string_view begin, std::string_view end) override EXCLUDES(mu_, queue_mu_);
  Status Checkpoint(const std::string& dir) override EXCLUDES(mu_);
  Status SearchByValue(std::string_view value, const ValueSearchOptions& options,
                       std::vector<SearchHit>* hits) override;
  Status FullTextSearch(std::string_view query, const FullTextOptions& options,
                        std::vector<SearchHit>* hits) override;
  Status SemanticSearch(std::string_view text, const SemanticOptions& options,
                        std::vector<SearchHit>* hits) override;
  Status SemanticSearchByVector(const std::vector<float>& vector, const SemanticOptions& options,
                                std::vector<SearchHit>* hits) override;
  DBStats GetStats() override EXCLUDES(mu_);
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
  Status WriteInternal(const WriteOptions& options, WriteBatch* batch, bool force_rotate) EXCLUDES(queue_mu_);
  // Leads until the queue is empty (committer) or, once its own write is
  // committed, hands off (self); drops queue_mu_ around the group's I/O and
  // its acknowledgements.
  void LeadLocked(Writer* self) REQUIRES(queue_mu_);
  // Commits one group (after waiting for it to fill up, if may_wait and
  // that pays); *finished receives its writers, to be signalled (or called
  // back) once queue_mu_ is released.
  void CommitGroupLocked(std::vector<Writer*>* finished, bool may_wait) REQUIRES(queue_mu_);
  bool ShouldWaitForGroupLocked() const REQUIRES(queue_mu_);
  std::chrono::steady_clock::time_point GroupWaitDeadlineLocked() const REQUIRES(queue_mu_);
  Status WriteGroup(const std::vector<Writer*>& group, bool sync);  // leader only, no locks
  // force: rotate even an unfilled memtable (Flush).
  Status MakeRoomForWrite(bool force) EXCLUDES(mu_);                  // leader only
  void CommitterLoop() EXCLUDES(queue_mu_);
  void SetReadOnly(const Status& reason) EXCLUDES(mu_);
  Status ReadOnlyError() EXCLUDES(mu_);

  // Background work.
  void BackgroundLoop() EXCLUDES(mu_);
  bool NeedsCompactionLocked() const REQUIRES(mu_);
  Status FlushOldestImmutable() EXCLUDES(mu_);
  Status RunOneCompaction(std::unique_ptr<Compaction> c) EXCLUDES(mu_);
  void InstallVersionLocked(std::shared_ptr<const Version> version, bool drop_oldest_imm) REQUIRES(mu_);
  void DeleteObsoleteFiles() EXCLUDES(mu_);
  // A flush or compaction output that never made it into the manifest: its
  // table, its index segment and the segment held in memory.
  void RemoveUnusedOutput(uint64_t number);
  SequenceNumber SmallestSnapshot() EXCLUDES(mu_);
  uint64_t NewOutputFileNumber() EXCLUDES(mu_);
  // Waits until no immutable memtable is left (or background work fails).
  Status WaitForFlushLocked() REQUIRES(mu_);
  // The slowdown and stop conditions of MakeRoomForWrite: returns OK when
  // the write may go on, or the error that keeps it from going on.
  Status WaitForRoomLocked(bool force) REQUIRES(mu_);
  void RecordStallLocked(uint64_t micros) REQUIRES(mu_);

  // The current view, and the sequence to read it at (the snapshot's, or
  // the newest published).
  std::shared_ptr<const View> CurrentView(const Snapshot* snapshot, SequenceNumber* sequence) EXCLUDES(mu_);
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
  Mutex queue_mu_;
  std::deque<Writer*> writers_ GUARDED_BY(queue_mu_);
  bool leader_active_ GUARDED_BY(queue_mu_) = false;
  int leaders_running_ GUARDED_BY(queue_mu_) = 0;  // threads inside LeadLocked
  bool committer_should_lead_ GUARDED_BY(queue_mu_) = false;
  bool committer_stop_ GUARDED_BY(queue_mu_) = false;
  CondVar committer_cv_;  // committer waits for leadership
  CondVar idle_cv_;       // shutdown waits for an empty queue
  CondVar group_cv_;      // a leader waits for its group to fill
  bool leader_waiting_ GUARDED_BY(queue_mu_) = false;  // a leader waits for its group to fill
  // The writer that waits, before it leads, for its group to fill (null if
  // the waiting leader is the committer): the writer that fills the group
  // leads it in its place.
  Writer* waiting_writer_ GUARDED_BY(queue_mu_) = nullptr;
  size_t last_group_size_ GUARDED_BY(queue_mu_) = 0;
  uint64_t group_io_ewma_ns_ GUARDED_BY(queue_mu_) = 0;  // WAL append (+ sync) time
  // Counts the groups taken from the queue: a writer queued now is in the
  // group taken next (or, behind a full group, a later one).
  uint32_t open_generation_ GUARDED_BY(queue_mu_) = 0;
  GroupWake group_wake_;  // synchronous writers sleep here until their group is done
  std::thread committer_;

  // Leader only (and Open, before any writer exists).
  std::unique_ptr<wal::LogWriter> log_;
  MemTable* mem_ = nullptr;  // == view_->mem
  std::vector<std::string_view> records_;  // scratch for one group
  std::vector<Writer*> group_;             // scratch for one group

  // The segment writes go to and where its records end (not its zeros
  // ahead), set by the leader after each append, before it acknowledges:
  // Checkpoint copies that segment only that far, since past it a copy
  // could catch zeros before records being written. A leaf lock.
  Mutex wal_end_mu_;
  uint64_t wal_end_number_ GUARDED_BY(wal_end_mu_) = 0;
  uint64_t wal_end_bytes_ GUARDED_BY(wal_end_mu_) = 0;
  void PublishWalEnd(uint64_t number, uint64_t bytes) EXCLUDES(wal_end_mu_) {
    MutexLock lock(&wal_end_mu_);
    wal_end_number_ = number;
    wal_end_bytes_ = bytes;
  }

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

  // Background thread only.
  CompactPointers compact_pointers_;

  // Guarded by mu_ (held for pointer swaps and bookkeeping, never across I/O).
  Mutex mu_;
  std::shared_ptr<const View> view_ GUARDED_BY(mu_);
  std::list<SnapshotImpl*> snapshots_ GUARDED_BY(mu_);
  Status read_only_reason_ GUARDED_BY(mu_);
  // Closed live WAL segments: number -> bytes.
  std::map<uint64_t, uint64_t> closed_wal_sizes_ GUARDED_BY(mu_);
  CondVar bg_cv_;       // wakes the background thread
  CondVar bg_done_cv_;  // a flush or compaction finished
  bool shutting_down_ GUARDED_BY(mu_) = false;
  bool bg_running_ GUARDED_BY(mu_) = true;
  std::set<uint64_t> pending_outputs_ GUARDED_BY(mu_);  // tables being written: not orphans
  // A CompactRange request, on its caller's stack. Its fields are guarded
  // by mu_ too (the analysis cannot name the outer mu_ here), except ran,
  // which the background thread sets before done.
  struct ManualCompaction {
    int level;
    bool in_place = false;
    bool ran = false;  // a compaction was found and run
    std::string begin, end;
    bool running = false;  // the background thread has taken it
    bool done = false;
    Status status;
  };
  std::deque<ManualCompaction*> manual_compactions_ GUARDED_BY(mu_);
  int checkpoints_in_progress_ GUARDED_BY(mu_) = 0;  // file deletion waits while > 0
  Status bg_error_ GUARDED_BY(mu_);                  // last background failure
  uint64_t bg_attempts_ GUARDED_BY(mu_) = 0;         // background jobs finished (either way)
  uint64_t flushes_ GUARDED_BY(mu_) = 0;
  uint64_t compactions_ GUARDED_BY(mu_) = 0;
  uint64_t flush_bytes_ GUARDED_BY(mu_) = 0;
  uint64_t compaction_bytes_read_ GUARDED_BY(mu_) = 0;
  uint64_t compaction_bytes_written_ GUARDED_BY(mu_) = 0;
  uint64_t stall_count_ GUARDED_BY(mu_) = 0;
  uint64_t stall_micros_ GUARDED_BY(mu_) = 0;
  uint64_t max_stall_micros_ GUARDED_BY(mu_) = 0;
  std::thread background_;
};

}  // namespace kvstore
