#include "engine/db_impl.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "engine/coding/merging_iterator.h"
#include "engine/db_iter.h"
#include "engine/filename.h"
#include "engine/wal/log_format.h"
#include "engine/wal/log_reader.h"
#include "engine/write_batch_internal.h"

namespace kvstore {

namespace {
// Group commit waits for stragglers only when a group's I/O takes longer
// than this (that is, when it includes an fsync), and never longer than the
// second bound.
constexpr uint64_t kGroupWaitMinIoNs = 20'000;
constexpr uint64_t kGroupWaitMaxNs = 200'000;

// Backpressure on L0 (the LevelDB thresholds): from kL0SlowdownFiles on,
// each write group waits a millisecond, spreading the delay over many
// writes instead of stopping them; at kL0StopFiles writes wait for
// compaction.
constexpr size_t kL0SlowdownFiles = 8;
constexpr size_t kL0StopFiles = 12;

// After a background failure that may pass (a full disk), retry after this.
constexpr auto kBackgroundRetryDelay = std::chrono::milliseconds(500);

CompactionOptions MakeCompactionOptions(const Options& o) {
  CompactionOptions c;
  // Compaction outputs of 2 MiB (LevelDB's size; smaller for tiny
  // memtables): a small table's index is a short binary search, which made
  // random reads after compaction 12% faster than with 64 MiB tables
  // (kvbench readrandom, 3M keys). L1 holds four memtables' worth.
  c.target_file_size = std::clamp<uint64_t>(o.memtable_budget, 64 << 10, 2 << 20);
  c.level1_bytes = std::max<uint64_t>(4 * static_cast<uint64_t>(o.memtable_budget), 1 << 20);
  c.table.bloom_bits_per_key = o.bloom_bits_per_key;
  c.table.compression = o.compression ? sstable::Compression::kLZ4 : sstable::Compression::kNone;
  return c;
}

uint64_t MicrosSince(std::chrono::steady_clock::time_point start) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count());
}
}  // namespace

struct DBImpl::Writer {
  WriteBatch* batch = nullptr;
  WriteBatch owned;        // an async writer's batch lives here
  bool sync = true;
  WriteCallback callback;  // empty for a synchronous writer
  bool force_rotate = false;  // Flush: rotate the memtable even if not full
  DBSearch::BatchDocs docs;   // what the batch adds to the search indexes
  Status status;
  // A synchronous writer sleeps on this until its group is done: marked
  // done after queue_mu_ is dropped, so that it does not wake up only to
  // block on the mutex its waker still holds, and woken together with the
  // rest of its group (engine/sync/group_wake.h). Its generation is the
  // group it joined the queue for.
  //
  // A futex, not std::binary_semaphore: libstdc++'s acquire spins and then
  // calls sched_yield before it sleeps. On two cores, eight waiting writers
  // yielding to each other (4,600 sched_yield calls per writer per 2,000
  // writes, seen with perf trace) took the CPU from the thread committing
  // their group.
  GroupWake::Waiter waiter;
};

class DBImpl::SnapshotImpl final : public Snapshot {
 public:
  explicit SnapshotImpl(SequenceNumber seq) : Snapshot(seq) {}
  std::list<SnapshotImpl*>::iterator position;
};

Status DB::Open(const Options& options, const std::string& path, std::unique_ptr<DB>* db) {
  db->reset();
  auto impl = std::make_unique<DBImpl>(options, path);
  Status s = impl->Open();
  if (s.ok()) *db = std::move(impl);
  return s;
}

DBImpl::DBImpl(const Options& options, std::string dbname)
    : options_(options),
      env_(options.env != nullptr ? options.env : Env::Default()),
      dbname_(std::move(dbname)),
      compaction_options_(MakeCompactionOptions(options)),
      block_cache_(std::make_unique<sstable::BlockCache>(options.block_cache_bytes)),
      table_cache_(std::make_unique<TableCache>(env_, dbname_, block_cache_.get(),
                                                static_cast<size_t>(std::max(options.max_open_files, 16)))),
      versions_(std::make_unique<VersionSet>(env_, dbname_)) {}

DBImpl::~DBImpl() {
  // The background embedder reads views and values: it goes first.
  if (search_ != nullptr) search_->StopEmbedding();
  {
    MutexLock lock(&queue_mu_);
    while (!writers_.empty() || leader_active_ || leaders_running_ != 0) idle_cv_.Wait(&queue_mu_);
    committer_stop_ = true;
    committer_cv_.NotifyOne();
  }
  if (committer_.joinable()) committer_.join();
  {
    MutexLock lock(&mu_);
    shutting_down_ = true;
    bg_cv_.NotifyAll();
    bg_done_cv_.NotifyAll();
  }
  if (background_.joinable()) background_.join();
  if (log_ != nullptr) (void)log_->Close();
  for (SnapshotImpl* s : snapshots_) delete s;  // unreleased: the caller's bug, but don't leak
}

Status DBImpl::Open() {
  Status s = DBSearch::Create(options_, env_, dbname_, &search_);
  if (!s.ok()) return s;
  s = Recover();
  if (!s.ok()) return s;
  if (search_ != nullptr) {
    // Tables written before search was turned on, or under another index
    // configuration, get their segments now; those already built are kept.
    s = search_->EnsureSegments(*versions_->current(), table_cache_.get());
    if (!s.ok()) return s;
    DBSearch::Host host;
    host.view = [this](std::vector<std::shared_ptr<MemTable>>* mems, std::shared_ptr<const Version>* version) {
      SequenceNumber seq;
      std::shared_ptr<const View> view = CurrentView(nullptr, &seq);
      mems->assign({view->mem});
      mems->insert(mems->end(), view->imm.begin(), view->imm.end());
      *version = view->version;
    };
    host.live = [this](std::string_view key, uint64_t seq, bool* live, std::string* value) {
      SequenceNumber newest;
      std::shared_ptr<const View> view = CurrentView(nullptr, &newest);
      // A doc is queued for embedding after it is in the memtable but just
      // before its sequence is published: it is committed, so read up to it.
      SequenceNumber found_seq = 0;
      Status s = GetFromView(*view, std::max<SequenceNumber>(newest, seq), key, value, &found_seq);
      *live = s.ok() && found_seq == seq;
      return s.IsNotFound() ? Status::OK() : s;
    };
    s = search_->StartEmbedding(std::move(host));
    if (!s.ok()) return s;
  }
  committer_ = std::thread([this] { CommitterLoop(); });
  background_ = std::thread([this] { BackgroundLoop(); });
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Recovery

Status DBImpl::Recover() {
  if (options_.create_if_missing) {
    Status s = env_->CreateDir(dbname_);
    if (!s.ok()) return s;
  } else if (!env_->FileExists(dbname_)) {
    return Status::InvalidArgument(dbname_ + ": does not exist (create_if_missing is false)");
  }
  Status s = env_->LockFile(LockFileName(dbname_), &db_lock_);
  if (!s.ok()) return s;

  bool has_manifest = false;
  s = versions_->Recover(&has_manifest);
  if (!s.ok()) return s;

  std::vector<std::string> children;
  s = env_->GetChildren(dbname_, &children);
  if (!s.ok()) return s;
  std::vector<uint64_t> logs;
  std::set<uint64_t> tables_on_disk;
  for (const std::string& name : children) {
    uint64_t number;
    if (ParseLogFileName(name, &number)) {
      logs.push_back(number);
      versions_->MarkFileNumberUsed(number);
    } else if (ParseTableFileName(name, &number)) {
      tables_on_disk.insert(number);
      versions_->MarkFileNumberUsed(number);
    }
  }
  std::sort(logs.begin(), logs.end());
  if (!has_manifest && !tables_on_disk.empty()) {
    // Going on would start an empty manifest and delete the tables as
    // obsolete.
    return Status::Corruption(CurrentFileName(dbname_) +
                              ": missing, but the directory holds tables (run kvctl repair)");
  }
  const bool exists = has_manifest || !logs.empty();
  if (!exists && !options_.create_if_missing) {
    return Status::InvalidArgument(dbname_ + ": no store here (create_if_missing is false)");
  }
  if (exists && options_.error_if_exists) {
    return Status::InvalidArgument(dbname_ + ": a store exists here (error_if_exists is true)");
  }
  std::shared_ptr<const Version> version = versions_->current();
  for (const auto& level : version->files) {
    for (const auto& f : level) {
      const std::string name = TableFileName(dbname_, f->number);
      if (tables_on_disk.count(f->number) == 0) {
        return Status::Corruption(name + ": named by the manifest but missing");
      }
      uint64_t size = 0;
      s = env_->GetFileSize(name, &size);
      if (!s.ok()) return s;
      if (size != f->file_size) {
        return Status::Corruption(name + ": " + std::to_string(size) + " bytes, but the manifest recorded " +
                                  std::to_string(f->file_size) + " (truncated or replaced)");
      }
    }
  }

  // Segments older than the manifest's log number are already in tables.
  const uint64_t min_log = versions_->log_number();
  std::erase_if(logs, [&](uint64_t n) { return n < min_log; });
  const uint64_t new_log = versions_->NewFileNumber();
  // Recovered writes all go to one memtable; it needs every replayed segment.
  auto mem = std::make_shared<MemTable>(logs.empty() ? new_log : logs.front(), options_.memtable_budget);
  if (search_ != nullptr) search_->AttachMemIndex(mem.get());
  mem_ = mem.get();
  SequenceNumber max_sequence = versions_->last_sequence();
  std::map<uint64_t, uint64_t> wal_sizes;
  for (size_t i = 0; i < logs.size(); i++) {
    const std::string path = LogFileName(dbname_, logs[i]);
    const bool is_last = i + 1 == logs.size();
    std::optional<uint64_t> cut_at;
    bool set_aside = false;
    s = ReplayLog(logs[i], is_last, &max_sequence, &cut_at, &set_aside);
    if (!s.ok()) return s;
    if (set_aside || (cut_at && !is_last)) {
      // Best-effort recovery stops at damage before the newest segment's
      // tail: what follows would be a gap in history, so it is set aside,
      // and durably so before the damaged segment is cut, lest a crash in
      // between leave later segments to be replayed after the cut.
      for (size_t j = set_aside ? i : i + 1; j < logs.size(); j++) {
        const std::string later = LogFileName(dbname_, logs[j]);
        s = env_->RenameFile(later, later + ".skipped");
        if (!s.ok()) return s;
      }
      s = env_->SyncDir(dbname_);
      if (s.ok() && cut_at && !set_aside) s = TruncateDurably(path, *cut_at);
      if (!s.ok()) return s;
      if (!set_aside) wal_sizes[logs[i]] = *cut_at;
      break;
    }
    if (cut_at) {
      // The torn tail of the newest segment: cut it off durably, so that the
      // segment stays clean once a newer one follows it.
      s = TruncateDurably(path, *cut_at);
      if (!s.ok()) return s;
    }
    uint64_t size = 0;
    if (env_->FileExists(path) && env_->GetFileSize(path, &size).ok()) wal_sizes[logs[i]] = size;
  }
  last_sequence_.store(max_sequence, std::memory_order_release);

  s = NewLogSegment(new_log);
  if (!s.ok()) return s;
  // A fresh manifest holding the recovered state; its log number still
  // covers the replayed segments, which the recovered memtable needs.
  s = versions_->StartNewManifest();
  if (!s.ok()) return s;
  {
    MutexLock lock(&mu_);
    closed_wal_sizes_ = std::move(wal_sizes);
    view_ = std::make_shared<const View>(View{std::move(mem), {}, versions_->current()});
  }
  DeleteObsoleteFiles();
  return Status::OK();
}

Status DBImpl::TruncateDurably(const std::string& path, uint64_t size) {
  std::unique_ptr<WritableFile> out;
  Status s = env_->NewAppendableFile(path, &out);
  if (s.ok()) s = out->Truncate(size);
  if (s.ok()) s = out->Sync();
  if (out != nullptr) {
    Status c = out->Close();
    if (s.ok()) s = c;
  }
  return s;
}

Status DBImpl::ReplayLog(uint64_t number, bool is_last, SequenceNumber* max_sequence,
                         std::optional<uint64_t>* cut_at, bool* set_aside) {
  const std::string path = LogFileName(dbname_, number);
  std::unique_ptr<SequentialFile> file;
  Status s = env_->NewSequentialFile(path, &file);
  if (!s.ok()) return s;
  uint64_t file_size = 0;
  s = env_->GetFileSize(path, &file_size);
  if (!s.ok()) return s;

  wal::LogReader reader(std::move(file), path);
  s = reader.ReadHeader();
  if (!s.ok()) {
    if (s.IsCorruption() && is_last && file_size < wal::kFileHeaderSize) {
      // A crash while the newest segment was being created: it holds nothing.
      return env_->RemoveFile(path);
    }
    if (s.IsCorruption() && options_.best_effort_recovery) {
      *set_aside = true;
      return Status::OK();
    }
    return s;
  }

  bool damaged = false;
  uint64_t damage_offset = 0;
  std::string damage;
  uint64_t good_end = 0;
  WriteBatch batch;
  for (;;) {
    std::string_view record;
    uint64_t offset = 0;
    wal::LogReader::Result r = reader.Read(&record, &offset);
    if (r == wal::LogReader::Result::kEnd) break;
    if (r == wal::LogReader::Result::kIOError) return Status::IOError(path + ": " + reader.error());
    if (r == wal::LogReader::Result::kBadRecord) {
      if (!damaged) {
        damaged = true;
        damage_offset = offset;
        damage = reader.error();
        good_end = reader.last_record_end();
      }
      if (options_.best_effort_recovery) break;
      continue;  // keep reading: a valid record after the damage means it is not a torn tail
    }
    if (damaged) {
      // A valid record after the damage. In a segment without sync marks
      // that proves the damage is no torn tail. With them it proves nothing
      // by itself: after a power failure the unsynced blocks of the newest
      // segment may come back in any order, a record after the zeros that
      // were written ahead of it; the sync marks tell (below).
      if (!is_last || !reader.has_sync_marks()) {
        return Status::Corruption(path + " at offset " + std::to_string(damage_offset) + ": " + damage +
                                  " (valid records follow, so this is not a torn tail)");
      }
      continue;  // never replayed: the log ends at the damage
    }
    s = WriteBatchInternal::SetContents(&batch, record);
    if (s.ok()) s = WriteBatchInternal::InsertInto(batch, mem_);
    if (s.ok() && search_ != nullptr) search_->IndexReplayedBatch(batch, mem_);
    if (!s.ok()) {
      return Status::Corruption(path + " at offset " + std::to_string(offset) + ": " +
                                std::string(s.message()));
    }
    uint32_t count = WriteBatchInternal::Count(batch);
    if (count > 0) {
      *max_sequence = std::max(*max_sequence, WriteBatchInternal::Sequence(batch) + count - 1);
    }
  }
  if (!damaged && reader.zero_tail()) {
    // Zeros the writer had written ahead of its records: the clean end of
    // the newest segment, cut off below, since a segment followed by a
    // newer one never ends in them (LogWriter::Finish cuts them).
    damaged = true;
    damage_offset = good_end = reader.last_record_end();
    damage = "zeros after the last record";
  }
  if (!damaged) return Status::OK();
  if (!options_.best_effort_recovery && reader.has_sync_marks() && reader.synced_through() > good_end) {
    return Status::Corruption(path + " at offset " + std::to_string(damage_offset) + ": " + damage +
                              " (a sync mark after it says the segment had been synced up to offset " +
                              std::to_string(reader.synced_through()) + ", so this is not a torn tail)");
  }
  if (!is_last && !options_.best_effort_recovery) {
    // Older segments are synced before a newer one is created, so damage in
    // one is never a torn write.
    return Status::Corruption(path + " at offset " + std::to_string(damage_offset) + ": " + damage);
  }
  *cut_at = good_end;
  return Status::OK();
}

Status DBImpl::NewLogSegment(uint64_t number) {
  const std::string path = LogFileName(dbname_, number);
  std::unique_ptr<wal::LogWriter> writer;
  wal::LogWriter::Options wo;
  // 1 MiB of zeros ahead (less for small memtables, whose segments are
  // small): measured here, an fdatasync after an append that overwrites
  // them takes 80-90 us where one that grows the file takes 110-130 us, and
  // half as long for 8 KiB groups (docs/format/wal.md, "Writing").
  wo.prefill_bytes = std::clamp<uint64_t>(options_.memtable_budget / 16, 4096, 1 << 20);
  wo.sync_marks = true;
  wo.map_unsynced = true;
  Status s = wal::LogWriter::Create(env_, path, wo, &writer);
  if (s.ok()) s = env_->SyncDir(dbname_);
  if (!s.ok()) {
    if (writer != nullptr) (void)writer->Close();
    // Writing on into the current segment is safe only if no newer segment
    // can turn up after a crash: recovery trusts that only the newest
    // segment may end torn.
    Status gone = env_->RemoveFile(path);
    if (gone.ok() || gone.IsNotFound()) gone = env_->SyncDir(dbname_);
    if (!gone.ok()) SetReadOnly(s);
    return s;
  }
  log_ = std::move(writer);
  wal_bytes_current_.store(log_->size());
  wal_number_current_.store(number);
  PublishWalEnd(number, log_->size());
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Writes

Status DBImpl::Put(const WriteOptions& options, std::string_view key, std::string_view value) {
  WriteBatch batch;
  batch.Put(key, value);
  return Write(options, &batch);
}

Status DBImpl::Delete(const WriteOptions& options, std::string_view key) {
  WriteBatch batch;
  batch.Delete(key);
  return Write(options, &batch);
}

Status DBImpl::Write(const WriteOptions& options, WriteBatch* batch) {
  if (batch == nullptr || batch->Count() == 0) return Status::OK();
  Status s = WriteBatchInternal::Validate(*batch, VectorDimension());
  if (!s.ok()) return s;
  return WriteInternal(options, batch, false);
}

Status DBImpl::WriteInternal(const WriteOptions& options, WriteBatch* batch, bool force_rotate) {
  if (read_only_.load(std::memory_order_acquire)) return ReadOnlyError();
  Writer w;
  w.batch = batch;
  w.sync = options.sync;
  w.force_rotate = force_rotate;
  if (search_ != nullptr) search_->AnalyzeBatch(*batch, &w.docs);
  MutexLock lock(&queue_mu_);
  w.waiter.set_generation(open_generation_);
  // A group is woken at once only when its I/O takes long enough (an
  // fsync) for its writers to be back before the next group starts.
  w.waiter.set_wake_alone(group_io_ewma_ns_ <= kGroupWaitMinIoNs);
  writers_.push_back(&w);
  if (leader_waiting_ && writers_.size() >= last_group_size_) {
    if (waiting_writer_ != nullptr) {
      // The writer that would lead is waiting for this group to fill up,
      // and it has: lead it from here instead of waking that writer, a
      // wakeup less before the group's write. It stays in the queue and is
      // acknowledged with the group.
      waiting_writer_ = nullptr;
      leader_waiting_ = false;
      LeadLocked(&w);
      return w.status;
    }
    group_cv_.NotifyOne();  // the committer
  }
  if (!leader_active_) {
    leader_active_ = true;
    if (ShouldWaitForGroupLocked()) {
      waiting_writer_ = &w;
      leader_waiting_ = true;
      const auto deadline = GroupWaitDeadlineLocked();
      lock.Unlock();
      // Waits on its own acknowledgement: a writer that fills the group
      // leads it, and w is acknowledged with it.
      if (group_wake_.WaitUntil(&w.waiter, deadline)) return w.status;
      lock.Lock();
      if (waiting_writer_ != &w) {
        // Taken over as the deadline passed.
        lock.Unlock();
        group_wake_.Wait(&w.waiter);
        return w.status;
      }
      waiting_writer_ = nullptr;
      leader_waiting_ = false;
    }
    LeadLocked(&w);
  } else {
    lock.Unlock();
    group_wake_.Wait(&w.waiter);
  }
  return w.status;
}

bool DBImpl::ShouldWaitForGroupLocked() const {
  // When fsyncs are slow and the last group was larger than what is queued
  // now, the writers just acknowledged are probably on their way back: wait
  // a fraction of an fsync for them, rather than paying a whole fsync for a
  // short group and making them wait for the next one.
  return writers_.size() < last_group_size_ && group_io_ewma_ns_ > kGroupWaitMinIoNs;
}

std::chrono::steady_clock::time_point DBImpl::GroupWaitDeadlineLocked() const {
  return std::chrono::steady_clock::now() +
         std::chrono::nanoseconds(std::min(group_io_ewma_ns_ / 4, kGroupWaitMaxNs));
}

void DBImpl::WriteAsync(const WriteOptions& options, WriteBatch batch, WriteCallback callback) {
  Status s;
  if (batch.Count() > 0) s = WriteBatchInternal::Validate(batch, VectorDimension());
  if (s.ok() && batch.Count() > 0 && read_only_.load(std::memory_order_acquire)) s = ReadOnlyError();
  if (!s.ok() || batch.Count() == 0) {
    if (callback) callback(s);
    return;
  }
  auto* w = new Writer;
  w->owned = std::move(batch);
  w->batch = &w->owned;
  w->sync = options.sync;
  w->callback = callback ? std::move(callback) : [](Status) {};
  if (search_ != nullptr) search_->AnalyzeBatch(w->owned, &w->docs);
  MutexLock lock(&queue_mu_);
  writers_.push_back(w);
  if (leader_waiting_ && writers_.size() >= last_group_size_) {
    if (waiting_writer_ != nullptr) {
      // A writer waits for this group to fill before it leads, asleep until
      // its own acknowledgement: the committer leads the group now.
      waiting_writer_ = nullptr;
      leader_waiting_ = false;
      committer_should_lead_ = true;
      committer_cv_.NotifyOne();
    } else {
      group_cv_.NotifyOne();
    }
  }
  if (!leader_active_) {
    leader_active_ = true;
    committer_should_lead_ = true;
    committer_cv_.NotifyOne();
  }
}

void DBImpl::CommitterLoop() {
  MutexLock lock(&queue_mu_);
  for (;;) {
    while (!committer_should_lead_ && !committer_stop_) committer_cv_.Wait(&queue_mu_);
    if (committer_should_lead_) {
      committer_should_lead_ = false;
      LeadLocked(nullptr);
      continue;
    }
    return;
  }
}

// A synchronous writer that finds no leader leads itself (self != nullptr):
// with one writer at a time it commits its own batch with no thread handoff.
// When others queued up meanwhile, it hands leadership to the committer
// thread once its own batch is committed, and returns. A writer waiting for
// its group to fill is replaced by the writer that fills it, which leads
// from the back of the queue (LeadLocked(self) may then run more than one
// group before its own). The committer (self == nullptr) leads until the queue
// is empty: under load one thread runs group after group back to back, and
// the writers only enqueue and wait, so no leader handoff (a wakeup on the
// critical path) sits between two fsyncs.
void DBImpl::LeadLocked(Writer* self) {
  leaders_running_++;
  std::vector<Writer*> finished, waiting, callbacks;
  // A writer that filled a waiting group leads it from the back of the
  // queue: behind a full group it may not be in the first one, and it leads
  // on until it is.
  bool self_done = false;
  bool first = true;
  for (;;) {
    // A writer that leads has already waited for its group to fill.
    CommitGroupLocked(&finished, /*may_wait=*/self == nullptr || !first);
    first = false;
    if (self != nullptr && std::erase(finished, self) > 0) self_done = true;  // the leader is not waiting
    const bool more = !writers_.empty();
    if (!more) {
      leader_active_ = false;
    } else if (self_done) {
      committer_should_lead_ = true;
      committer_cv_.NotifyOne();
    }
    if (!finished.empty()) {
      queue_mu_.Unlock();
      // The waiting writers first, with one wakeup for all of them; then the
      // callbacks, which may take a while. A waiting writer may be gone as
      // soon as it is marked done, so the callbacks are sorted out before.
      uint32_t bits = 0;
      callbacks.clear();
      waiting.clear();
      for (Writer* w : finished) {
        if (w->callback) {
          callbacks.push_back(w);
        } else if (w->waiter.wake_alone()) {
          GroupWake::MarkDoneAndWake(&w->waiter);
        } else {
          waiting.push_back(w);
          bits |= w->waiter.bit();
        }
      }
      for (Writer* w : waiting) GroupWake::MarkDone(&w->waiter);
      if (bits != 0) group_wake_.Wake(bits);
      for (Writer* w : callbacks) {
        w->callback(w->status);
        delete w;
      }
      finished.clear();
      queue_mu_.Lock();
    }
    if (!more || self_done) {
      // The destructor waits for this too: a leader may still be running
      // callbacks after it gave up leadership.
      if (--leaders_running_ == 0) idle_cv_.NotifyAll();
      return;
    }
  }
}

void DBImpl::CommitGroupLocked(std::vector<Writer*>* finished, bool may_wait) {
  // Group as many queued batches as fit, but keep a small write from waiting
  // behind a large group (the same bound LevelDB uses).
  constexpr size_t kSmallWrite = 128 << 10;
  constexpr size_t kMaxGroupBytes = 1 << 20;
  if (may_wait && ShouldWaitForGroupLocked()) {
    const auto deadline = GroupWaitDeadlineLocked();
    leader_waiting_ = true;
    while (writers_.size() < last_group_size_ && group_cv_.WaitUntil(&queue_mu_, deadline)) {
    }
    leader_waiting_ = false;
  }
  group_.clear();
  size_t bytes = writers_.front()->batch->ByteSize();
  const size_t max_bytes = bytes <= kSmallWrite ? bytes + kSmallWrite : kMaxGroupBytes;
  bool sync = false;
  bytes = 0;
  for (Writer* w : writers_) {
    size_t size = w->batch->ByteSize();
    if (!group_.empty() && bytes + size > max_bytes) break;
    group_.push_back(w);
    bytes += size;
    sync |= w->sync;
  }
  open_generation_++;
  queue_mu_.Unlock();
  // Only synced groups are timed: their fsync is what the wait for
  // stragglers above is weighed against.
  const auto start = sync ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  Status s = WriteGroup(group_, sync);
  const uint64_t io_ns =
      sync ? static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                       std::chrono::steady_clock::now() - start)
                                       .count())
           : 0;
  queue_mu_.Lock();
  group_io_ewma_ns_ = (group_io_ewma_ns_ * 7 + io_ns) / 8;
  last_group_size_ = group_.size();
  for (Writer* w : group_) {
    writers_.pop_front();
    w->status = s;
    finished->push_back(w);
  }
}

Status DBImpl::WriteGroup(const std::vector<Writer*>& group, bool sync) {
  if (read_only_.load(std::memory_order_acquire)) return ReadOnlyError();
  bool force = false;
  for (Writer* w : group) force |= w->force_rotate;
  Status s = MakeRoomForWrite(force);
  if (!s.ok()) return s;

  SequenceNumber seq = last_sequence_.load(std::memory_order_relaxed) + 1;
  records_.clear();
  uint64_t user_bytes = 0;
  for (Writer* w : group) {
    if (w->batch->Count() == 0) continue;  // a Flush request
    WriteBatchInternal::SetSequence(w->batch, seq);
    seq += WriteBatchInternal::Count(*w->batch);
    records_.push_back(WriteBatchInternal::Contents(*w->batch));
    user_bytes += w->batch->ByteSize();
  }
  if (records_.empty()) return Status::OK();
  s = log_->AddRecords(records_, sync);
  if (!s.ok()) {
    // A full disk is survivable when the partial append was cut off again:
    // fail this group and let later writes try. Anything else leaves the
    // WAL in a state we cannot vouch for.
    if (!(s.IsNoSpace() && log_->healthy())) SetReadOnly(s);
    return s;
  }
  wal_bytes_current_.store(log_->size(), std::memory_order_relaxed);
  PublishWalEnd(wal_number_current_.load(std::memory_order_relaxed), log_->size());
  if (sync) {
    stat_syncs_.fetch_add(1, std::memory_order_relaxed);
    s = log_->Sync();
    if (!s.ok()) {
      // After a failed fsync the kernel may have dropped the dirty pages;
      // retrying could report success for data that is gone (fsyncgate).
      SetReadOnly(s);
      return s;
    }
  }
  for (Writer* w : group) {
    if (w->batch->Count() == 0) continue;
    s = WriteBatchInternal::InsertInto(*w->batch, mem_);
    if (!s.ok()) {
      SetReadOnly(s);  // validated on entry: only a bug gets here
      return s;
    }
    // Before the sequence is published: a search at that sequence must
    // find every doc the memtable holds up to it.
    if (!w->docs.docs.empty()) search_->AddToMemIndex(&w->docs, WriteBatchInternal::Sequence(*w->batch), mem_);
  }
  last_sequence_.store(seq - 1, std::memory_order_release);
  stat_writes_.fetch_add(records_.size(), std::memory_order_relaxed);
  stat_groups_.fetch_add(1, std::memory_order_relaxed);
  stat_user_bytes_.fetch_add(user_bytes, std::memory_order_relaxed);
  return Status::OK();
}

Status DBImpl::MakeRoomForWrite(bool force) {
  MutexLock lock(&mu_);
  Status s = WaitForRoomLocked(force);
  if (!s.ok()) return s;
  if (!force && MemBytes(*mem_) < options_.memtable_budget) return Status::OK();
  if (force && mem_->entries() == 0) return Status::OK();
  lock.Unlock();

  // The memtable becomes immutable and a new segment takes the writes.
  // Sync the old segment first: then only the newest segment can ever end
  // in a torn write, which is what recovery relies on.
  s = log_->Finish();
  stat_syncs_.fetch_add(1, std::memory_order_relaxed);
  if (!s.ok()) {
    SetReadOnly(s);
    return s;
  }
  std::unique_ptr<wal::LogWriter> old = std::move(log_);
  const uint64_t old_number = wal_number_current_.load();
  const uint64_t new_number = versions_->NewFileNumber();
  s = NewLogSegment(new_number);
  if (!s.ok()) {
    log_ = std::move(old);  // keep writing where we were
    return s;
  }
  (void)old->Close();

  auto mem = std::make_shared<MemTable>(new_number, options_.memtable_budget);
  if (search_ != nullptr) search_->AttachMemIndex(mem.get());
  mem_ = mem.get();
  lock.Lock();
  closed_wal_sizes_[old_number] = old->size();
  auto view = std::make_shared<View>();
  view->mem = std::move(mem);
  view->imm.reserve(view_->imm.size() + 1);
  view->imm.push_back(view_->mem);
  view->imm.insert(view->imm.end(), view_->imm.begin(), view_->imm.end());
  view->version = view_->version;
  view_ = std::move(view);
  bg_cv_.NotifyOne();  // there is a memtable to flush
  return Status::OK();
}

// Waits while an earlier memtable is still being flushed (so at most two
// exist) or L0 has too many tables; slows a write down once when L0 is
// getting full. Leader only, with mu_ held.
Status DBImpl::WaitForRoomLocked(bool force) {
  bool delayed = false;
  const uint64_t attempts_before = bg_attempts_;
  for (;;) {
    if (shutting_down_) return Status::IOError("the DB is closing");
    const size_t l0 = view_->version->files[0].size();
    const bool memtable_full = force || MemBytes(*mem_) >= options_.memtable_budget;
    if (!delayed && l0 >= kL0SlowdownFiles) {
      const auto start = std::chrono::steady_clock::now();
      mu_.Unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      mu_.Lock();
      RecordStallLocked(MicrosSince(start));
      delayed = true;
      continue;
    }
    const bool must_wait = memtable_full && (!view_->imm.empty() || l0 >= kL0StopFiles);
    if (!must_wait) return Status::OK();
    // The flush or compaction that would make room is failing (for lack of
    // space, say): fail this write rather than hang; later writes try again.
    // Only an attempt made while this write waits counts: an error from
    // before may be stale (space has come back), and waking the background
    // thread below makes it try again at once.
    if (!bg_error_.ok() && bg_attempts_ != attempts_before) return bg_error_;
    const auto start = std::chrono::steady_clock::now();
    bg_cv_.NotifyOne();
    bg_done_cv_.Wait(&mu_);
    RecordStallLocked(MicrosSince(start));
  }
}

void DBImpl::RecordStallLocked(uint64_t micros) {
  stall_count_++;
  stall_micros_ += micros;
  max_stall_micros_ = std::max(max_stall_micros_, micros);
}

void DBImpl::SetReadOnly(const Status& reason) {
  MutexLock lock(&mu_);
  if (!read_only_.load(std::memory_order_relaxed)) {
    read_only_reason_ = reason;
    read_only_.store(true, std::memory_order_release);
  }
  // Flush and CompactRange may be waiting for background work that will
  // not happen now.
  bg_done_cv_.NotifyAll();
}

Status DBImpl::ReadOnlyError() {
  MutexLock lock(&mu_);
  return Status::ReadOnly("writes are refused after an earlier error: " +
                          read_only_reason_.ToString());
}

// ---------------------------------------------------------------------------
// Background work: flushes first, then compactions

void DBImpl::BackgroundLoop() {
  MutexLock lock(&mu_);
  while (!shutting_down_) {
    const bool has_imm = !view_->imm.empty();
    const bool manual = !manual_compactions_.empty();
    if (read_only_.load() || (!has_imm && !manual && !NeedsCompactionLocked())) {
      bg_cv_.Wait(&mu_);
      continue;
    }
    // A manual compaction is taken while mu_ is still held, and marked
    // running: from then on its CompactRange waits for it even if the store
    // turns read-only, since it lives on that caller's stack (and would
    // otherwise be gone, or gone from the queue, by the time it is done).
    ManualCompaction* m = nullptr;
    if (!has_imm && manual) {
      m = manual_compactions_.front();
      m->running = true;
    }
    lock.Unlock();
    Status s;
    if (has_imm) {
      s = FlushOldestImmutable();
    } else if (manual) {
      auto c = PickRangeCompaction(*versions_->current(), m->level, m->begin, m->end, m->in_place);
      m->ran = c != nullptr;
      if (c != nullptr) s = RunOneCompaction(std::move(c));
    } else {
      auto c = PickCompaction(*versions_->current(), compaction_options_, &compact_pointers_);
      if (c != nullptr) s = RunOneCompaction(std::move(c));
    }
    lock.Lock();
    if (m != nullptr) {
      m->status = s;
      m->done = true;
      manual_compactions_.pop_front();
    }
    bg_error_ = s;
    bg_attempts_++;
    bg_done_cv_.NotifyAll();
    if (!s.ok()) {
      if (s.IsNoSpace()) {
        // Space may come back: try again a little later.
        bg_cv_.WaitFor(&mu_, kBackgroundRetryDelay);
      } else {
        // A table that cannot be written or read is not something to retry
        // blindly; writes stop, reads go on.
        lock.Unlock();
        SetReadOnly(s);
        lock.Lock();
      }
    }
  }
  bg_running_ = false;
  bg_done_cv_.NotifyAll();
}

bool DBImpl::NeedsCompactionLocked() const {
  return MaxCompactionScore(*view_->version, compaction_options_) >= 1.0;
}

uint64_t DBImpl::NewOutputFileNumber() {
  const uint64_t number = versions_->NewFileNumber();
  MutexLock lock(&mu_);
  pending_outputs_.insert(number);
  return number;
}

SequenceNumber DBImpl::SmallestSnapshot() {
  MutexLock lock(&mu_);
  SequenceNumber smallest = last_sequence_.load(std::memory_order_acquire);
  for (const SnapshotImpl* s : snapshots_) smallest = std::min(smallest, s->sequence());
  return smallest;
}

void DBImpl::InstallVersionLocked(std::shared_ptr<const Version> version, bool drop_oldest_imm) {
  auto view = std::make_shared<View>(*view_);
  view->version = std::move(version);
  if (drop_oldest_imm) view->imm.pop_back();
  view_ = std::move(view);
}

namespace {
// From before a flush or compaction reads its docs until its version is
// installed (see DBSearch::BeginRewrite).
struct RewriteScope {
  explicit RewriteScope(DBSearch* s) : search(s) {
    if (search != nullptr) search->BeginRewrite();
  }
  ~RewriteScope() {
    if (search != nullptr) search->EndRewrite();
  }
  RewriteScope(const RewriteScope&) = delete;
  RewriteScope& operator=(const RewriteScope&) = delete;
  DBSearch* const search;
};
}  // namespace

Status DBImpl::FlushOldestImmutable() {
  RewriteScope rewrite(search_.get());
  std::shared_ptr<MemTable> imm, next;
  {
    MutexLock lock(&mu_);
    imm = view_->imm.back();
    next = view_->imm.size() >= 2 ? view_->imm[view_->imm.size() - 2] : view_->mem;
  }
  const uint64_t number = NewOutputFileNumber();
  FileMeta meta;
  std::unique_ptr<InternalIterator> iter = imm->NewIterator();
  Status s = BuildTable(env_, dbname_, number, compaction_options_.table, iter.get(), &meta,
                        search_ != nullptr ? search_->ForFlush(imm) : SidecarFactory());
  if (s.ok() && meta.file_size > 0) s = env_->SyncDir(dbname_);
  VersionEdit edit;
  bool edit_attempted = false;
  if (s.ok()) {
    edit_attempted = true;
    if (meta.file_size > 0) edit.AddFile(0, meta);
    // The WAL segments before the next memtable's first one hold nothing
    // that is not now in a table.
    edit.log_number = next->wal_number();
    edit.last_sequence = last_sequence_.load(std::memory_order_acquire);
    s = versions_->LogAndApply(&edit);
  }
  {
    MutexLock lock(&mu_);
    // A failed manifest edit may still be durable: its table stays pending
    // (never deleted) until the store is reopened.
    if (s.ok() || !edit_attempted) pending_outputs_.erase(number);
    if (s.ok()) {
      InstallVersionLocked(versions_->current(), /*drop_oldest_imm=*/true);
      flushes_++;
      flush_bytes_ += meta.file_size;
    }
  }
  if (!s.ok()) {
    if (!edit_attempted) RemoveUnusedOutput(number);
    return s;
  }
  DeleteObsoleteFiles();
  return Status::OK();
}

Status DBImpl::RunOneCompaction(std::unique_ptr<Compaction> c) {
  RewriteScope rewrite(search_.get());
  std::vector<uint64_t> outputs;
  auto new_file_number = [&] {
    uint64_t n = NewOutputFileNumber();
    outputs.push_back(n);
    return n;
  };
  VersionEdit edit;
  CompactionStats st;
  Status s;
  {
    // Scoped: the input version must not be pinned any more when obsolete
    // files are collected below, or its inputs would survive until the next
    // background job.
    std::shared_ptr<const Version> v = versions_->current();
    s = RunCompaction(*c, *v, env_, dbname_, table_cache_.get(), compaction_options_, SmallestSnapshot(),
                      new_file_number, &edit, &st,
                      search_ != nullptr ? search_->ForCompaction(*c) : SidecarFactory());
  }
  c.reset();
  const bool edit_attempted = s.ok();
  if (s.ok()) s = versions_->LogAndApply(&edit);
  {
    MutexLock lock(&mu_);
    // As in a flush: after a failed manifest edit the outputs stay pending.
    if (s.ok() || !edit_attempted) {
      for (uint64_t n : outputs) pending_outputs_.erase(n);
    }
    if (s.ok()) {
      InstallVersionLocked(versions_->current(), /*drop_oldest_imm=*/false);
      compactions_++;
      compaction_bytes_read_ += st.bytes_read;
      compaction_bytes_written_ += st.bytes_written;
    }
  }
  if (!s.ok()) {
    if (!edit_attempted) {
      for (uint64_t n : outputs) RemoveUnusedOutput(n);
    }
    return s;
  }
  DeleteObsoleteFiles();
  return Status::OK();
}

void DBImpl::RemoveUnusedOutput(uint64_t number) {
  (void)env_->RemoveFile(TableFileName(dbname_, number));
  (void)env_->RemoveFile(IndexFileName(dbname_, number));
  if (search_ != nullptr) search_->Evict(number);
}

// Removes what no version and no WAL replay needs any more: tables dropped
// by compactions (once no reader pins them), WAL segments already in tables,
// old manifests, and leftovers of a crash (orphan tables of an unfinished
// flush or compaction, a CURRENT.tmp).
void DBImpl::DeleteObsoleteFiles() {
  std::set<uint64_t> pending;
  {
    MutexLock lock(&mu_);
    if (checkpoints_in_progress_ > 0) return;
    pending = pending_outputs_;
  }
  const std::set<uint64_t> live = versions_->LiveFiles();
  const uint64_t min_log = versions_->log_number();
  const uint64_t manifest = versions_->manifest_number();
  std::vector<std::string> children;
  if (!env_->GetChildren(dbname_, &children).ok()) return;
  for (const std::string& name : children) {
    uint64_t number;
    bool remove = false;
    if (ParseLogFileName(name, &number)) {
      remove = number < min_log;
      if (remove) {
        MutexLock lock(&mu_);
        closed_wal_sizes_.erase(number);
      }
    } else if (ParseTableFileName(name, &number)) {
      remove = live.count(number) == 0 && pending.count(number) == 0;
      if (remove) table_cache_->Evict(number);
    } else if (ParseIndexFileName(name, &number)) {
      // A table's index segment goes with it (and an orphan with its orphan).
      remove = live.count(number) == 0 && pending.count(number) == 0;
      if (remove && search_ != nullptr) search_->Evict(number);
    } else if (name.rfind("MANIFEST-", 0) == 0) {
      remove = name != ManifestFileName("", manifest).substr(1);
    } else if (name == "CURRENT.tmp") {
      remove = true;  // only Open writes CURRENT, before this runs
    }
    if (remove) (void)env_->RemoveFile(dbname_ + "/" + name);
  }
}

Status DBImpl::WaitForFlushLocked() {
  // Only a failure of an attempt made while we wait counts: an error left
  // from before (a full disk since cleared) says nothing about this flush.
  const uint64_t attempts_before = bg_attempts_;
  while (!view_->imm.empty()) {
    if (!bg_running_ || shutting_down_) return Status::IOError("the DB is closing");
    if (read_only_.load()) {
      return Status::ReadOnly("writes are refused after an earlier error: " + read_only_reason_.ToString());
    }
    if (!bg_error_.ok() && bg_attempts_ != attempts_before) return bg_error_;
    bg_cv_.NotifyOne();
    bg_done_cv_.Wait(&mu_);
  }
  return Status::OK();
}

Status DBImpl::Flush() {
  WriteBatch empty;
  Status s = WriteInternal(WriteOptions{}, &empty, /*force_rotate=*/true);
  if (!s.ok()) return s;
  MutexLock lock(&mu_);
  return WaitForFlushLocked();
}

Status DBImpl::CompactRange(std::string_view begin, std::string_view end) {
  Status s = Flush();
  if (!s.ok()) return s;
  int deepest = 0;
  {
    std::shared_ptr<const Version> v = versions_->current();
    for (int level = 0; level < kNumLevels; level++) {
      if (!v->files[level].empty()) deepest = level;
    }
  }
  // Each level down into the next, as far as the deepest level holding
  // data (at least L1, so that L0's overlapping tables get merged too); then
  // the deepest level in place, since nothing below it would ever collect
  // its garbage.
  const int last = std::max(deepest, 1);
  bool compacted_into_last = false;
  for (int level = 0; level <= last; level++) {
    // A compaction into the last level already rewrote what it overlapped.
    if (level == last && compacted_into_last) break;
    ManualCompaction m;
    m.level = level;
    m.in_place = level == last;
    m.begin.assign(begin);
    m.end.assign(end);
    MutexLock lock(&mu_);
    manual_compactions_.push_back(&m);
    bg_cv_.NotifyOne();
    while (!m.done && (m.running || (bg_running_ && !read_only_.load()))) bg_done_cv_.Wait(&mu_);
    if (!m.done) {
      std::erase(manual_compactions_, &m);
      if (read_only_.load()) {
        return Status::ReadOnly("writes are refused after an earlier error: " + read_only_reason_.ToString());
      }
      return Status::IOError("the DB is closing");
    }
    if (!m.status.ok()) return m.status;
    compacted_into_last = level + 1 == last && m.ran;
  }
  return Status::OK();
}

Status DBImpl::Checkpoint(const std::string& dir) {
  if (env_->FileExists(dir)) return Status::InvalidArgument(dir + ": already exists");
  Status s = env_->CreateDir(dir);
  if (!s.ok()) return s;
  {
    MutexLock lock(&mu_);
    checkpoints_in_progress_++;  // no file is deleted until we are done
  }
  std::shared_ptr<const Version> version;
  uint64_t log_number;
  SequenceNumber last_sequence;
  versions_->CurrentState(&version, &log_number, &last_sequence);
  // Tables: hard links (they are immutable).
  for (int level = 0; level < kNumLevels && s.ok(); level++) {
    for (const auto& f : version->files[level]) {
      s = env_->LinkFile(TableFileName(dbname_, f->number), TableFileName(dir, f->number));
      // Its index segment too, when it has one (the checkpoint rebuilds
      // what is missing when it is opened with search on).
      if (s.ok() && env_->FileExists(IndexFileName(dbname_, f->number))) {
        s = env_->LinkFile(IndexFileName(dbname_, f->number), IndexFileName(dir, f->number));
      }
      if (!s.ok()) break;
    }
  }
  // WAL segments the version does not cover: copies, since the newest is
  // still being written. The one being written is copied only as far as its
  // records reached when the copy starts: beyond that its zeros ahead are
  // being overwritten while the copy reads them, and the copy could catch
  // zeros before later records, which recovery may call corruption. Finished
  // segments (zeros cut off, synced) are copied whole; one created but not
  // yet written to, header only.
  std::vector<std::string> children;
  if (s.ok()) s = env_->GetChildren(dbname_, &children);
  std::vector<uint64_t> logs;
  for (const std::string& name : children) {
    uint64_t number;
    if (ParseLogFileName(name, &number) && number >= log_number) logs.push_back(number);
  }
  std::sort(logs.begin(), logs.end());
  for (uint64_t number : logs) {
    if (!s.ok()) break;
    std::unique_ptr<SequentialFile> in;
    std::unique_ptr<WritableFile> out;
    s = env_->NewSequentialFile(LogFileName(dbname_, number), &in);
    if (s.ok()) s = env_->NewWritableFile(LogFileName(dir, number), &out);
    uint64_t left = UINT64_MAX;
    {
      MutexLock lock(&wal_end_mu_);
      if (number == wal_end_number_) {
        left = wal_end_bytes_;
      } else if (number > wal_end_number_) {
        left = wal::kFileHeaderSize;
      }
    }
    std::string buf(1 << 20, '\0');
    while (s.ok() && left > 0) {
      std::string_view got;
      s = in->Read(static_cast<size_t>(std::min<uint64_t>(buf.size(), left)), &got, buf.data());
      if (!s.ok() || got.empty()) break;
      s = out->Append(got);
      left -= got.size();
    }
    if (s.ok()) s = out->Sync();
    if (out != nullptr) (void)out->Close();
  }
  if (s.ok()) {
    VersionEdit snapshot = versions_->SnapshotEdit(*version, log_number, last_sequence);
    s = WriteManifest(env_, dir, versions_->NewFileNumber(), snapshot, nullptr);
  }
  if (s.ok()) s = env_->SyncDir(dir);
  {
    MutexLock lock(&mu_);
    checkpoints_in_progress_--;
  }
  return s;
}

// ---------------------------------------------------------------------------
// Reads

std::shared_ptr<const DBImpl::View> DBImpl::CurrentView(const Snapshot* snapshot, SequenceNumber* sequence) {
  // The sequence is read together with the view, under mu_: a compaction
  // decides what to drop from the newest sequence (also read under mu_)
  // and installs its result under mu_, so a reader gets either the version
  // from before it (whose files stay while pinned) or a sequence the
  // compaction kept everything for. And every write at or below the
  // sequence went into a memtable this view (or a table of its version)
  // contains, since the leader swaps views before it publishes sequences.
  MutexLock lock(&mu_);
  *sequence = snapshot != nullptr ? snapshot->sequence() : last_sequence_.load(std::memory_order_acquire);
  return view_;
}

Status DBImpl::Get(const ReadOptions& options, std::string_view key, std::string* value) {
  SequenceNumber seq;
  std::shared_ptr<const View> view = CurrentView(options.snapshot, &seq);
  stat_reads_.fetch_add(1, std::memory_order_relaxed);
  return GetFromView(*view, seq, key, value, nullptr);
}

Status DBImpl::GetFromView(const View& view, SequenceNumber seq, std::string_view key, std::string* value,
                           SequenceNumber* found_seq) {
  MemTable::Lookup r = view.mem->Get(key, seq, value, found_seq);
  for (size_t i = 0; r == MemTable::Lookup::kAbsent && i < view.imm.size(); i++) {
    r = view.imm[i]->Get(key, seq, value, found_seq);
  }
  if (r == MemTable::Lookup::kFound) return Status::OK();
  if (r == MemTable::Lookup::kDeleted) return Status::NotFound();
  std::string lookup;
  AppendInternalKey(&lookup, key, seq, kValueTypeForSeek);
  Version::Lookup vr;
  int probed = 0;
  Status s = view.version->Get(lookup, table_cache_.get(), &vr, value, &probed, found_seq);
  stat_tables_probed_.fetch_add(static_cast<uint64_t>(probed), std::memory_order_relaxed);
  if (!s.ok()) return s;
  return vr == Version::Lookup::kFound ? Status::OK() : Status::NotFound();
}

// ---------------------------------------------------------------------------
// Search

template <typename Fn>
Status DBImpl::RunSearch(const Snapshot* snapshot, Fn&& fn) {
  if (search_ == nullptr) return Status::NotSupported("search is off for this DB (Options::search.enabled)");
  SequenceNumber seq;
  std::shared_ptr<const View> view = CurrentView(snapshot, &seq);
  std::vector<const MemTable*> mems{view->mem.get()};
  for (const auto& imm : view->imm) mems.push_back(imm.get());
  // A candidate counts only as the newest version of its key at seq.
  DBSearch::LiveCheck live = [this, &view, seq](std::string_view key, uint64_t candidate_seq, bool* is_live,
                                                std::string* value) {
    std::string scratch;
    SequenceNumber found_seq = 0;
    Status s = GetFromView(*view, seq, key, value != nullptr ? value : &scratch, &found_seq);
    *is_live = s.ok() && found_seq == candidate_seq;
    return s.IsNotFound() ? Status::OK() : s;
  };
  return fn(mems, *view->version, seq, live);
}

Status DBImpl::SearchByValue(std::string_view value, const ValueSearchOptions& options,
                             std::vector<SearchHit>* hits) {
  hits->clear();
  return RunSearch(options.snapshot, [&](const auto& mems, const Version& v, SequenceNumber seq, const auto& live) {
    return search_->SearchByValue(mems, v, seq, value, options, live, hits);
  });
}

Status DBImpl::FullTextSearch(std::string_view query, const FullTextOptions& options,
                              std::vector<SearchHit>* hits) {
  hits->clear();
  return RunSearch(options.snapshot, [&](const auto& mems, const Version& v, SequenceNumber seq, const auto& live) {
    return search_->FullTextSearch(mems, v, seq, query, options, live, hits);
  });
}

Status DBImpl::SemanticSearch(std::string_view text, const SemanticOptions& options,
                              std::vector<SearchHit>* hits) {
  hits->clear();
  return RunSearch(options.snapshot, [&](const auto& mems, const Version& v, SequenceNumber seq, const auto& live) {
    return search_->SemanticSearch(mems, v, seq, text, nullptr, options, live, hits);
  });
}

Status DBImpl::SemanticSearchByVector(const std::vector<float>& vector, const SemanticOptions& options,
                                      std::vector<SearchHit>* hits) {
  hits->clear();
  return RunSearch(options.snapshot, [&](const auto& mems, const Version& v, SequenceNumber seq, const auto& live) {
    return search_->SemanticSearch(mems, v, seq, {}, &vector, options, live, hits);
  });
}

std::unique_ptr<Iterator> DBImpl::NewIterator(const ReadOptions& options) {
  SequenceNumber seq;
  std::shared_ptr<const View> view = CurrentView(options.snapshot, &seq);
  std::vector<std::unique_ptr<InternalIterator>> children;
  children.push_back(view->mem->NewIterator());
  for (const auto& imm : view->imm) children.push_back(imm->NewIterator());
  view->version->AddIterators(table_cache_.get(), &children);
  return std::make_unique<DBIter>(std::make_unique<MergingIterator>(std::move(children)), seq,
                                  std::move(view));
}

const Snapshot* DBImpl::GetSnapshot() {
  MutexLock lock(&mu_);
  auto* s = new SnapshotImpl(last_sequence_.load(std::memory_order_acquire));
  snapshots_.push_back(s);
  s->position = std::prev(snapshots_.end());
  return s;
}

void DBImpl::ReleaseSnapshot(const Snapshot* snapshot) {
  if (snapshot == nullptr) return;
  auto* s = const_cast<SnapshotImpl*>(static_cast<const SnapshotImpl*>(snapshot));
  MutexLock lock(&mu_);
  snapshots_.erase(s->position);
  delete s;
}

// ---------------------------------------------------------------------------
// Stats

DBStats DBImpl::GetStats() {
  DBStats st;
  st.sequence = last_sequence_.load(std::memory_order_acquire);
  std::shared_ptr<const View> view;
  {
    MutexLock lock(&mu_);
    view = view_;
    st.snapshots = snapshots_.size();
    st.read_only = read_only_.load();
    if (st.read_only) st.read_only_reason = read_only_reason_.ToString();
    st.wal_bytes = wal_bytes_current_.load();
    st.wal_segments = closed_wal_sizes_.size() + 1;
    for (const auto& [number, bytes] : closed_wal_sizes_) st.wal_bytes += bytes;
    st.flushes = flushes_;
    st.compactions = compactions_;
    st.flush_bytes_written = flush_bytes_;
    st.compaction_bytes_read = compaction_bytes_read_;
    st.compaction_bytes_written = compaction_bytes_written_;
    st.stall_count = stall_count_;
    st.stall_micros = stall_micros_;
    st.max_stall_micros = max_stall_micros_;
    if (!bg_error_.ok()) st.background_error = bg_error_.ToString();
  }
  if (search_ != nullptr) {
    const DBSearch::Stats ss = search_->GetStats();
    st.search_enabled = true;
    st.index_vector_dimension = search_->dimension();
    st.index_segments = ss.segments;
    st.index_segment_bytes = ss.segment_bytes;
    st.index_segments_built = ss.segments_built;
    st.index_docs_built = ss.docs_indexed;
    st.index_build_micros = ss.build_micros;
    st.index_embedding_backlog = ss.embedding_backlog;
    st.index_docs_embedded = ss.docs_embedded;
    st.index_embedding_errors = ss.embedding_errors;
    st.index_embedding_last_error = ss.embedding_last_error;
    st.index_vector_rewrites = ss.vector_rewrites;
  }
  int64_t live = view->mem->live_keys();
  st.memtable_bytes = MemBytes(*view->mem);
  for (const auto& m : view->imm) {
    st.memtable_bytes += MemBytes(*m);
    live += m->live_keys();
  }
  st.immutable_memtables = view->imm.size();
  for (int level = 0; level < kNumLevels; level++) {
    LevelStats ls;
    ls.files = view->version->files[level].size();
    ls.bytes = view->version->LevelBytes(level);
    st.levels.push_back(ls);
    for (const auto& f : view->version->files[level]) live += static_cast<int64_t>(f->entries);
  }
  // Table entries count every version and deletion: an upper estimate.
  st.live_keys_estimate = live > 0 ? static_cast<uint64_t>(live) : 0;
  st.writes = stat_writes_.load();
  st.write_groups = stat_groups_.load();
  st.wal_syncs = stat_syncs_.load();
  st.user_bytes_written = stat_user_bytes_.load();
  st.write_amplification =
      st.user_bytes_written == 0
          ? 0
          : static_cast<double>(st.flush_bytes_written + st.compaction_bytes_written) /
                static_cast<double>(st.user_bytes_written);
  st.reads = stat_reads_.load();
  st.tables_probed = stat_tables_probed_.load();
  st.block_cache_hits = block_cache_->hits();
  st.block_cache_misses = block_cache_->misses();
  st.block_cache_bytes = block_cache_->usage();
  st.table_memory_bytes = table_cache_->MemoryUsage();
  st.open_tables = table_cache_->open_tables();
  return st;
}

bool DBImpl::GetProperty(std::string_view name, std::string* value) {
  constexpr std::string_view kPrefix = "kvstore.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return false;
  name.remove_prefix(kPrefix.size());
  const DBStats st = GetStats();
  std::string levels;
  for (size_t i = 0; i < st.levels.size(); i++) {
    if (i > 0) levels += ' ';
    levels += "L" + std::to_string(i) + ":" + std::to_string(st.levels[i].files) + "/" +
              std::to_string(st.levels[i].bytes);
  }
  char wamp[32];
  std::snprintf(wamp, sizeof(wamp), "%.2f", st.write_amplification);
  const std::pair<std::string_view, std::string> fields[] = {
      {"sequence", std::to_string(st.sequence)},
      {"memtable_bytes", std::to_string(st.memtable_bytes)},
      {"immutable_memtables", std::to_string(st.immutable_memtables)},
      {"wal_bytes", std::to_string(st.wal_bytes)},
      {"wal_segments", std::to_string(st.wal_segments)},
      {"live_keys_estimate", std::to_string(st.live_keys_estimate)},
      {"writes", std::to_string(st.writes)},
      {"write_groups", std::to_string(st.write_groups)},
      {"wal_syncs", std::to_string(st.wal_syncs)},
      {"snapshots", std::to_string(st.snapshots)},
      {"read_only", st.read_only ? "true" : "false"},
      {"read_only_reason", st.read_only_reason},
      {"levels", levels},
      {"user_bytes_written", std::to_string(st.user_bytes_written)},
      {"flush_bytes_written", std::to_string(st.flush_bytes_written)},
      {"compaction_bytes_read", std::to_string(st.compaction_bytes_read)},
      {"compaction_bytes_written", std::to_string(st.compaction_bytes_written)},
      {"write_amplification", wamp},
      {"flushes", std::to_string(st.flushes)},
      {"compactions", std::to_string(st.compactions)},
      {"reads", std::to_string(st.reads)},
      {"tables_probed", std::to_string(st.tables_probed)},
      {"block_cache_hits", std::to_string(st.block_cache_hits)},
      {"block_cache_misses", std::to_string(st.block_cache_misses)},
      {"block_cache_bytes", std::to_string(st.block_cache_bytes)},
      {"table_memory_bytes", std::to_string(st.table_memory_bytes)},
      {"open_tables", std::to_string(st.open_tables)},
      {"stall_count", std::to_string(st.stall_count)},
      {"stall_micros", std::to_string(st.stall_micros)},
      {"max_stall_micros", std::to_string(st.max_stall_micros)},
      {"background_error", st.background_error},
      {"search_enabled", st.search_enabled ? "true" : "false"},
      {"index_vector_dimension", std::to_string(st.index_vector_dimension)},
      {"index_segments", std::to_string(st.index_segments)},
      {"index_segment_bytes", std::to_string(st.index_segment_bytes)},
      {"index_segments_built", std::to_string(st.index_segments_built)},
      {"index_docs_built", std::to_string(st.index_docs_built)},
      {"index_build_micros", std::to_string(st.index_build_micros)},
      {"index_embedding_backlog", std::to_string(st.index_embedding_backlog)},
      {"index_docs_embedded", std::to_string(st.index_docs_embedded)},
      {"index_embedding_errors", std::to_string(st.index_embedding_errors)},
      {"index_embedding_last_error", st.index_embedding_last_error},
      {"index_vector_rewrites", std::to_string(st.index_vector_rewrites)},
  };
  if (name == "stats") {
    value->clear();
    for (const auto& [k, v] : fields) {
      value->append(k);
      value->append(": ");
      value->append(v);
      value->push_back('\n');
    }
    return true;
  }
  for (const auto& [k, v] : fields) {
    if (k == name) {
      *value = v;
      return true;
    }
  }
  return false;
}

}  // namespace kvstore
