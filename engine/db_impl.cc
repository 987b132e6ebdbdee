#include "engine/db_impl.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <semaphore>

#include "engine/db_iter.h"
#include "engine/filename.h"
#include "engine/merging_iterator.h"
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
}  // namespace

struct DBImpl::Writer {
  WriteBatch* batch = nullptr;
  WriteBatch owned;        // an async writer's batch lives here
  bool sync = true;
  WriteCallback callback;  // empty for a synchronous writer
  Status status;
  // A synchronous writer sleeps on this until its group is done. It is
  // released after queue_mu_ is dropped, so the writer does not wake up only
  // to block on the mutex its waker still holds. The writer returns only
  // after the release has made the count visible; the futex wake that
  // release issues next may then land on a stack frame that is gone, which
  // on Linux is at worst a spurious wakeup of nobody (the lifetime question
  // of C++ paper P2616).
  std::binary_semaphore done_signal{0};
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
      dbname_(std::move(dbname)) {}

DBImpl::~DBImpl() {
  {
    std::unique_lock lock(queue_mu_);
    idle_cv_.wait(lock, [this] { return writers_.empty() && !leader_active_ && leaders_running_ == 0; });
    committer_stop_ = true;
    committer_cv_.notify_one();
  }
  if (committer_.joinable()) committer_.join();
  if (log_ != nullptr) (void)log_->Close();
  for (SnapshotImpl* s : snapshots_) delete s;  // unreleased: the caller's bug, but don't leak
}

Status DBImpl::Open() {
  Status s = Recover();
  if (!s.ok()) return s;
  committer_ = std::thread([this] { CommitterLoop(); });
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

  std::vector<std::string> children;
  s = env_->GetChildren(dbname_, &children);
  if (!s.ok()) return s;
  std::vector<uint64_t> logs;
  for (const std::string& name : children) {
    uint64_t number;
    if (ParseLogFileName(name, &number)) logs.push_back(number);
  }
  std::sort(logs.begin(), logs.end());
  if (logs.empty() && !options_.create_if_missing) {
    return Status::InvalidArgument(dbname_ + ": no store here (create_if_missing is false)");
  }
  if (!logs.empty() && options_.error_if_exists) {
    return Status::InvalidArgument(dbname_ + ": a store exists here (error_if_exists is true)");
  }
  if (!logs.empty()) next_file_number_ = logs.back() + 1;

  // Recovered writes all go to one memtable; it needs every old segment.
  auto mem = std::make_shared<MemTable>(logs.empty() ? next_file_number_ : logs.front(),
                                        options_.memtable_budget);
  mem_ = mem.get();
  SequenceNumber max_sequence = 0;
  uint64_t older_bytes = 0;
  uint64_t segments = 0;
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
      if (!set_aside) {
        older_bytes += *cut_at;
        segments++;
      }
      break;
    }
    if (cut_at) {
      // The torn tail of the newest segment: cut it off durably, so that the
      // segment stays clean once a newer one follows it.
      s = TruncateDurably(path, *cut_at);
      if (!s.ok()) return s;
    }
    uint64_t size = 0;
    if (env_->FileExists(path) && env_->GetFileSize(path, &size).ok()) {
      older_bytes += size;
      segments++;
    }
  }
  last_sequence_.store(max_sequence, std::memory_order_release);
  wal_bytes_older_.store(older_bytes);
  wal_segments_.store(segments);

  s = NewLogSegment();
  if (!s.ok()) return s;
  std::lock_guard lock(mu_);
  view_ = std::make_shared<const MemView>(MemView{std::move(mem), {}});
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
      return Status::Corruption(path + " at offset " + std::to_string(damage_offset) + ": " +
                                damage + " (valid records follow, so this is not a torn tail)");
    }
    s = WriteBatchInternal::SetContents(&batch, record);
    if (s.ok()) s = WriteBatchInternal::InsertInto(batch, mem_);
    if (!s.ok()) {
      return Status::Corruption(path + " at offset " + std::to_string(offset) + ": " +
                                std::string(s.message()));
    }
    uint32_t count = WriteBatchInternal::Count(batch);
    if (count > 0) {
      *max_sequence = std::max(*max_sequence, WriteBatchInternal::Sequence(batch) + count - 1);
    }
  }
  if (!damaged) return Status::OK();
  if (!is_last && !options_.best_effort_recovery) {
    // Older segments are synced before a newer one is created, so damage in
    // one is never a torn write.
    return Status::Corruption(path + " at offset " + std::to_string(damage_offset) + ": " + damage);
  }
  *cut_at = good_end;
  return Status::OK();
}

Status DBImpl::NewLogSegment() {
  const uint64_t number = next_file_number_++;
  const std::string path = LogFileName(dbname_, number);
  std::unique_ptr<wal::LogWriter> writer;
  Status s = wal::LogWriter::Create(env_, path, &writer);
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
  wal_segments_.fetch_add(1);
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
  Status s = WriteBatchInternal::Validate(*batch);
  if (!s.ok()) return s;
  if (read_only_.load(std::memory_order_acquire)) return ReadOnlyError();

  Writer w;
  w.batch = batch;
  w.sync = options.sync;
  std::unique_lock lock(queue_mu_);
  writers_.push_back(&w);
  if (leader_waiting_ && writers_.size() >= last_group_size_) group_cv_.notify_one();
  if (!leader_active_) {
    leader_active_ = true;
    LeadLocked(lock, &w);  // w is at the front, so in the first group
  } else {
    lock.unlock();
    w.done_signal.acquire();
  }
  return w.status;
}

void DBImpl::WriteAsync(const WriteOptions& options, WriteBatch batch, WriteCallback callback) {
  Status s;
  if (batch.Count() > 0) s = WriteBatchInternal::Validate(batch);
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
  std::lock_guard lock(queue_mu_);
  writers_.push_back(w);
  if (leader_waiting_ && writers_.size() >= last_group_size_) group_cv_.notify_one();
  if (!leader_active_) {
    leader_active_ = true;
    committer_should_lead_ = true;
    committer_cv_.notify_one();
  }
}

void DBImpl::CommitterLoop() {
  std::unique_lock lock(queue_mu_);
  for (;;) {
    committer_cv_.wait(lock, [this] { return committer_should_lead_ || committer_stop_; });
    if (committer_should_lead_) {
      committer_should_lead_ = false;
      LeadLocked(lock, nullptr);
      continue;
    }
    return;
  }
}

// A synchronous writer that finds no leader leads itself (self != nullptr):
// with one writer at a time it commits its own batch with no thread handoff.
// When others queued up meanwhile, it hands leadership to the committer
// thread and returns. The committer (self == nullptr) leads until the queue
// is empty: under load one thread runs group after group back to back, and
// the writers only enqueue and wait, so no leader handoff (a wakeup on the
// critical path) sits between two fsyncs.
void DBImpl::LeadLocked(std::unique_lock<std::mutex>& lock, Writer* self) {
  leaders_running_++;
  std::vector<Writer*> finished;
  for (;;) {
    CommitGroupLocked(lock, &finished);
    if (self != nullptr) std::erase(finished, self);  // the leader is not waiting
    const bool more = !writers_.empty();
    if (!more) {
      leader_active_ = false;
    } else if (self != nullptr) {
      committer_should_lead_ = true;
      committer_cv_.notify_one();
    }
    if (!finished.empty()) {
      lock.unlock();
      for (Writer* w : finished) {
        if (w->callback) {
          w->callback(w->status);
          delete w;
        } else {
          w->done_signal.release();
        }
      }
      finished.clear();
      lock.lock();
    }
    if (!more || self != nullptr) {
      // The destructor waits for this too: a leader may still be running
      // callbacks after it gave up leadership.
      if (--leaders_running_ == 0) idle_cv_.notify_all();
      return;
    }
  }
}

void DBImpl::CommitGroupLocked(std::unique_lock<std::mutex>& lock, std::vector<Writer*>* finished) {
  // Group as many queued batches as fit, but keep a small write from waiting
  // behind a large group (the same bound LevelDB uses).
  constexpr size_t kSmallWrite = 128 << 10;
  constexpr size_t kMaxGroupBytes = 1 << 20;
  // When fsyncs are slow and the last group was larger than what is queued
  // now, the writers just acknowledged are probably on their way back: wait
  // a fraction of an fsync for them, rather than paying a whole fsync for a
  // short group and making them wait for the next one.
  if (writers_.size() < last_group_size_ && group_io_ewma_ns_ > kGroupWaitMinIoNs) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::nanoseconds(std::min(group_io_ewma_ns_ / 4, kGroupWaitMaxNs));
    leader_waiting_ = true;
    group_cv_.wait_until(lock, deadline, [this] { return writers_.size() >= last_group_size_; });
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
  lock.unlock();
  // Only synced groups are timed: their fsync is what the wait for
  // stragglers above is weighed against.
  const auto start = sync ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  Status s = WriteGroup(group_, sync);
  const uint64_t io_ns =
      sync ? static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                       std::chrono::steady_clock::now() - start)
                                       .count())
           : 0;
  lock.lock();
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
  Status s = MakeRoomForWrite();
  if (!s.ok()) return s;

  SequenceNumber seq = last_sequence_.load(std::memory_order_relaxed) + 1;
  records_.clear();
  for (Writer* w : group) {
    WriteBatchInternal::SetSequence(w->batch, seq);
    seq += WriteBatchInternal::Count(*w->batch);
    records_.push_back(WriteBatchInternal::Contents(*w->batch));
  }
  s = log_->AddRecords(records_);
  if (!s.ok()) {
    // A full disk is survivable when the partial append was cut off again:
    // fail this group and let later writes try. Anything else leaves the
    // WAL in a state we cannot vouch for.
    if (!(s.IsNoSpace() && log_->healthy())) SetReadOnly(s);
    return s;
  }
  wal_bytes_current_.store(log_->size(), std::memory_order_relaxed);
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
    s = WriteBatchInternal::InsertInto(*w->batch, mem_);
    if (!s.ok()) {
      SetReadOnly(s);  // validated on entry: only a bug gets here
      return s;
    }
  }
  last_sequence_.store(seq - 1, std::memory_order_release);
  stat_writes_.fetch_add(group.size(), std::memory_order_relaxed);
  stat_groups_.fetch_add(1, std::memory_order_relaxed);
  return Status::OK();
}

Status DBImpl::MakeRoomForWrite() {
  if (mem_->MemoryUsage() < options_.memtable_budget) return Status::OK();
  // The full memtable becomes immutable and a new segment takes the writes.
  // Finish (sync) the old segment first: then only the newest segment can
  // ever end in a torn write, which is what recovery relies on.
  Status s = log_->Finish();
  stat_syncs_.fetch_add(1, std::memory_order_relaxed);
  if (!s.ok()) {
    SetReadOnly(s);
    return s;
  }
  std::unique_ptr<wal::LogWriter> old = std::move(log_);
  const uint64_t new_number = next_file_number_;
  s = NewLogSegment();
  if (!s.ok()) {
    log_ = std::move(old);  // keep writing where we were
    return s;
  }
  (void)old->Close();
  wal_bytes_older_.fetch_add(old->size(), std::memory_order_relaxed);

  auto mem = std::make_shared<MemTable>(new_number, options_.memtable_budget);
  mem_ = mem.get();
  std::lock_guard lock(mu_);
  auto view = std::make_shared<MemView>();
  view->mem = std::move(mem);
  view->imm.reserve(view_->imm.size() + 1);
  view->imm.push_back(view_->mem);
  view->imm.insert(view->imm.end(), view_->imm.begin(), view_->imm.end());
  view_ = std::move(view);
  // The flush hook: immutable memtables wait here until SSTables exist to
  // flush them into (see the SSTable issue); reads and recovery already
  // handle any number of them.
  return Status::OK();
}

void DBImpl::SetReadOnly(const Status& reason) {
  std::lock_guard lock(mu_);
  if (!read_only_.load(std::memory_order_relaxed)) {
    read_only_reason_ = reason;
    read_only_.store(true, std::memory_order_release);
  }
}

Status DBImpl::ReadOnlyError() {
  std::lock_guard lock(mu_);
  return Status::ReadOnly("writes are refused after an earlier error: " +
                          read_only_reason_.ToString());
}

// ---------------------------------------------------------------------------
// Reads

std::shared_ptr<const DBImpl::MemView> DBImpl::CurrentView() {
  std::lock_guard lock(mu_);
  return view_;
}

Status DBImpl::Get(const ReadOptions& options, std::string_view key, std::string* value) {
  // The sequence before the view: every write at or below it went into a
  // memtable that this view (or a newer one) contains.
  const SequenceNumber seq = options.snapshot != nullptr
                                 ? options.snapshot->sequence()
                                 : last_sequence_.load(std::memory_order_acquire);
  std::shared_ptr<const MemView> view = CurrentView();
  MemTable::Lookup r = view->mem->Get(key, seq, value);
  for (size_t i = 0; r == MemTable::Lookup::kAbsent && i < view->imm.size(); i++) {
    r = view->imm[i]->Get(key, seq, value);
  }
  if (r == MemTable::Lookup::kFound) return Status::OK();
  return Status::NotFound();
}

std::unique_ptr<Iterator> DBImpl::NewIterator(const ReadOptions& options) {
  const SequenceNumber seq = options.snapshot != nullptr
                                 ? options.snapshot->sequence()
                                 : last_sequence_.load(std::memory_order_acquire);
  std::shared_ptr<const MemView> view = CurrentView();
  std::vector<std::unique_ptr<InternalIterator>> children;
  children.push_back(view->mem->NewIterator());
  for (const auto& imm : view->imm) children.push_back(imm->NewIterator());
  return std::make_unique<DBIter>(std::make_unique<MergingIterator>(std::move(children)), seq,
                                  std::move(view));
}

const Snapshot* DBImpl::GetSnapshot() {
  std::lock_guard lock(mu_);
  auto* s = new SnapshotImpl(last_sequence_.load(std::memory_order_acquire));
  snapshots_.push_back(s);
  s->position = std::prev(snapshots_.end());
  return s;
}

void DBImpl::ReleaseSnapshot(const Snapshot* snapshot) {
  if (snapshot == nullptr) return;
  auto* s = const_cast<SnapshotImpl*>(static_cast<const SnapshotImpl*>(snapshot));
  std::lock_guard lock(mu_);
  snapshots_.erase(s->position);
  delete s;
}

// ---------------------------------------------------------------------------
// Stats

DBStats DBImpl::GetStats() {
  DBStats st;
  st.sequence = last_sequence_.load(std::memory_order_acquire);
  std::shared_ptr<const MemView> view;
  {
    std::lock_guard lock(mu_);
    view = view_;
    st.snapshots = snapshots_.size();
    st.read_only = read_only_.load();
    if (st.read_only) st.read_only_reason = read_only_reason_.ToString();
  }
  int64_t live = view->mem->live_keys();
  st.memtable_bytes = view->mem->MemoryUsage();
  for (const auto& m : view->imm) {
    st.memtable_bytes += m->MemoryUsage();
    live += m->live_keys();
  }
  st.immutable_memtables = view->imm.size();
  st.live_keys_estimate = live > 0 ? static_cast<uint64_t>(live) : 0;
  st.wal_bytes = wal_bytes_older_.load() + wal_bytes_current_.load();
  st.wal_segments = wal_segments_.load();
  st.writes = stat_writes_.load();
  st.write_groups = stat_groups_.load();
  st.wal_syncs = stat_syncs_.load();
  return st;
}

bool DBImpl::GetProperty(std::string_view name, std::string* value) {
  constexpr std::string_view kPrefix = "kvstore.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return false;
  name.remove_prefix(kPrefix.size());
  const DBStats st = GetStats();
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
