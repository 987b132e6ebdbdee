// DBImpl coordinates the write queue, the WAL, the memtables and recovery.
// The work itself lives in engine/wal and engine/memtable.
//
// Concurrency, in three parts:
//   - The write queue (queue_mu_): writers enqueue; one of them, or the
//     committer thread for WriteAsync, is the leader. The leader takes a
//     group from the front, writes it to the WAL with one append and at most
//     one fdatasync, inserts it into the memtable, publishes the new last
//     sequence, and acknowledges the group. State marked "leader only" is
//     touched by whichever thread holds leadership, never by two at once.
//   - mu_ guards the current memtables (as an immutable, shared "view"),
//     the snapshot list and the error that made the store read-only. It is
//     held only for pointer swaps, never across I/O.
//   - Readers load last_sequence_ (acquire), then the view, and read the
//     memtables lock-free.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/coding/internal_key.h"
#include "engine/memtable/memtable.h"
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
  DBStats GetStats() override;
  bool GetProperty(std::string_view name, std::string* value) override;

 private:
  struct Writer;
  class SnapshotImpl;

  // The memtables readers consult, newest first. Replaced, never mutated.
  struct MemView {
    std::shared_ptr<MemTable> mem;
    std::vector<std::shared_ptr<MemTable>> imm;  // newest first; waiting for a flush
  };

  Status Recover();
  // Replays one WAL segment into mem_. Damage it may survive is reported,
  // not repaired: *cut_at is where a torn (or, best-effort, damaged) tail
  // begins; *set_aside means best-effort recovery skips the whole segment.
  Status ReplayLog(uint64_t number, bool is_last, SequenceNumber* max_sequence,
                   std::optional<uint64_t>* cut_at, bool* set_aside);
  Status TruncateDurably(const std::string& path, uint64_t size);
  Status NewLogSegment();

  Status Enqueue(Writer* w);  // sync path; returns when w is done
  void LeadLocked(std::unique_lock<std::mutex>& lock, Writer* self);
  // Commits one group; *finished receives its writers, to be signalled (or
  // called back) once queue_mu_ is released.
  void CommitGroupLocked(std::unique_lock<std::mutex>& lock, std::vector<Writer*>* finished);
  Status WriteGroup(const std::vector<Writer*>& group, bool sync);  // leader only, no locks
  Status MakeRoomForWrite();                                          // leader only
  void CommitterLoop();
  void SetReadOnly(const Status& reason);
  Status ReadOnlyError();

  std::shared_ptr<const MemView> CurrentView();

  // Constant after construction.
  const Options options_;
  Env* const env_;
  const std::string dbname_;
  std::unique_ptr<FileLock> db_lock_;

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
  MemTable* mem_ = nullptr;  // == view_->mem
  uint64_t next_file_number_ = 1;
  std::vector<std::string_view> records_;  // scratch for one group
  std::vector<Writer*> group_;             // scratch for one group

  // Published by the leader, read by everyone.
  std::atomic<SequenceNumber> last_sequence_{0};
  std::atomic<uint64_t> wal_bytes_older_{0};   // closed live segments
  std::atomic<uint64_t> wal_bytes_current_{0};
  std::atomic<uint64_t> wal_segments_{0};
  std::atomic<uint64_t> stat_writes_{0};
  std::atomic<uint64_t> stat_groups_{0};
  std::atomic<uint64_t> stat_syncs_{0};
  std::atomic<bool> read_only_{false};

  // Guarded by mu_.
  std::mutex mu_;
  std::shared_ptr<const MemView> view_;
  std::list<SnapshotImpl*> snapshots_;
  Status read_only_reason_;
};

}  // namespace kvstore
