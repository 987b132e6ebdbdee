// The DB through its public API: reads and writes, snapshots, iterators,
// reopen, locking, limits, group commit, and the failure paths (torn tails,
// corruption, failed fsync, a full disk) through the fault-injecting Env.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "engine/env/fault_injection_env.h"
#include "engine/filename.h"
#include "engine/wal/log_format.h"
#include "engine/wal/log_reader.h"
#include "kvstore/db.h"

namespace kvstore {
namespace {

class DBTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("kvstore_db_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  Status Open() {
    db_.reset();
    return DB::Open(options_, dir_, &db_);
  }
  void Reopen() { ASSERT_TRUE(Open().ok()); }
  std::string Get(std::string_view key, const Snapshot* snap = nullptr) {
    std::string v;
    ReadOptions ro;
    ro.snapshot = snap;
    Status s = db_->Get(ro, key, &v);
    if (s.IsNotFound()) return "NOT_FOUND";
    if (!s.ok()) return s.ToString();
    return v;
  }
  std::string Contents(const Snapshot* snap = nullptr) {
    ReadOptions ro;
    ro.snapshot = snap;
    auto it = db_->NewIterator(ro);
    std::string out;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      out += std::string(it->key()) + "=" + std::string(it->value()) + ";";
    }
    return out;
  }
  std::vector<std::string> LogFiles() {
    std::vector<std::string> out;
    for (auto& e : std::filesystem::directory_iterator(dir_)) {
      uint64_t n;
      if (ParseLogFileName(e.path().filename().string(), &n)) out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string dir_;
  FaultInjectionEnv fault_env_{Env::Default()};  // outlives db_ (reset in TearDown)
  Options options_;
  WriteOptions wo_;
  std::unique_ptr<DB> db_;
};

TEST_F(DBTest, PutGetDelete) {
  Reopen();
  EXPECT_EQ(Get("a"), "NOT_FOUND");
  ASSERT_TRUE(db_->Put(wo_, "a", "1").ok());
  ASSERT_TRUE(db_->Put(wo_, "b", "2").ok());
  EXPECT_EQ(Get("a"), "1");
  ASSERT_TRUE(db_->Put(wo_, "a", "3").ok());
  EXPECT_EQ(Get("a"), "3");
  ASSERT_TRUE(db_->Delete(wo_, "a").ok());
  EXPECT_EQ(Get("a"), "NOT_FOUND");
  ASSERT_TRUE(db_->Delete(wo_, "never").ok());
  ASSERT_TRUE(db_->Put(wo_, "", "empty key").ok());
  ASSERT_TRUE(db_->Put(wo_, std::string("\0\xff", 2), std::string("\0", 1)).ok());
  EXPECT_EQ(Get(std::string("\0\xff", 2)), std::string("\0", 1));
  EXPECT_EQ(Get(""), "empty key");
}

TEST_F(DBTest, WriteBatchIsAtomicAndOrdered) {
  Reopen();
  WriteBatch b;
  b.Put("k", "first");
  b.Put("k", "second");
  b.Put("x", "1");
  b.Delete("x");
  ASSERT_TRUE(db_->Write(wo_, &b).ok());
  EXPECT_EQ(Get("k"), "second");
  EXPECT_EQ(Get("x"), "NOT_FOUND");
  WriteBatch empty;
  ASSERT_TRUE(db_->Write(wo_, &empty).ok());
}

TEST_F(DBTest, SurvivesReopen) {
  Reopen();
  for (int i = 0; i < 1000; i++) {
    ASSERT_TRUE(db_->Put(WriteOptions{.sync = i % 2 == 0}, "key" + std::to_string(i),
                         "value" + std::to_string(i)).ok());
  }
  ASSERT_TRUE(db_->Delete(wo_, "key7").ok());
  uint64_t seq = db_->GetStats().sequence;
  Reopen();
  EXPECT_EQ(Get("key0"), "value0");
  EXPECT_EQ(Get("key999"), "value999");
  EXPECT_EQ(Get("key7"), "NOT_FOUND");
  EXPECT_EQ(db_->GetStats().sequence, seq);
  EXPECT_EQ(db_->GetStats().live_keys_estimate, 999u);
  ASSERT_TRUE(db_->Put(wo_, "after", "reopen").ok());
  Reopen();
  EXPECT_EQ(Get("after"), "reopen");
  EXPECT_EQ(Get("key1"), "value1");
}

TEST_F(DBTest, IteratorSeekAndPrefixScan) {
  Reopen();
  for (const char* k : {"user:1", "user:2", "user:3", "usez", "apple", "zebra"}) {
    ASSERT_TRUE(db_->Put(wo_, k, std::string("v-") + k).ok());
  }
  ASSERT_TRUE(db_->Delete(wo_, "user:2").ok());
  auto it = db_->NewIterator(ReadOptions{});
  std::vector<std::string> prefix;
  for (it->Seek("user:"); it->Valid() && it->key().starts_with("user:"); it->Next()) {
    prefix.emplace_back(it->key());
  }
  EXPECT_EQ(prefix, (std::vector<std::string>{"user:1", "user:3"}));
  it->Seek("zz");
  EXPECT_FALSE(it->Valid());
  it->Seek("");
  ASSERT_TRUE(it->Valid());
  EXPECT_EQ(it->key(), "apple");
  EXPECT_TRUE(it->status().ok());
  // Range [user:1, usez): end exclusive.
  std::vector<std::string> range;
  for (it->Seek("user:1"); it->Valid() && it->key() < "usez"; it->Next()) range.emplace_back(it->key());
  EXPECT_EQ(range, (std::vector<std::string>{"user:1", "user:3"}));
}

TEST_F(DBTest, IteratorIsAStableView) {
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "a", "1").ok());
  ASSERT_TRUE(db_->Put(wo_, "c", "3").ok());
  auto it = db_->NewIterator(ReadOptions{});
  ASSERT_TRUE(db_->Put(wo_, "b", "2").ok());
  ASSERT_TRUE(db_->Delete(wo_, "c").ok());
  std::string seen;
  for (it->SeekToFirst(); it->Valid(); it->Next()) seen += std::string(it->key()) + std::string(it->value());
  EXPECT_EQ(seen, "a1c3");
  EXPECT_EQ(Contents(), "a=1;b=2;");
}

TEST_F(DBTest, Snapshots) {
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "k", "v1").ok());
  const Snapshot* s1 = db_->GetSnapshot();
  ASSERT_TRUE(db_->Put(wo_, "k", "v2").ok());
  ASSERT_TRUE(db_->Put(wo_, "new", "x").ok());
  const Snapshot* s2 = db_->GetSnapshot();
  ASSERT_TRUE(db_->Delete(wo_, "k").ok());
  EXPECT_EQ(Get("k", s1), "v1");
  EXPECT_EQ(Get("new", s1), "NOT_FOUND");
  EXPECT_EQ(Get("k", s2), "v2");
  EXPECT_EQ(Get("k"), "NOT_FOUND");
  EXPECT_EQ(Contents(s1), "k=v1;");
  EXPECT_EQ(Contents(s2), "k=v2;new=x;");
  EXPECT_EQ(db_->GetStats().snapshots, 2u);
  db_->ReleaseSnapshot(s1);
  db_->ReleaseSnapshot(s2);
  EXPECT_EQ(db_->GetStats().snapshots, 0u);
}

TEST_F(DBTest, OneOwnerPerDirectory) {
  Reopen();
  std::unique_ptr<DB> second;
  Status s = DB::Open(options_, dir_, &second);
  EXPECT_TRUE(s.IsBusy()) << s.ToString();
  EXPECT_NE(s.ToString().find("LOCK"), std::string::npos);
  db_.reset();
  EXPECT_TRUE(DB::Open(options_, dir_, &second).ok());
}

TEST_F(DBTest, CreateAndExistFlags) {
  options_.create_if_missing = false;
  EXPECT_TRUE(Open().IsInvalidArgument());
  options_.create_if_missing = true;
  Reopen();
  db_.reset();
  options_.error_if_exists = true;
  EXPECT_TRUE(Open().IsInvalidArgument());
}

TEST_F(DBTest, SizeLimits) {
  Reopen();
  EXPECT_TRUE(db_->Put(wo_, std::string(kMaxKeySize + 1, 'k'), "v").IsInvalidArgument());
  EXPECT_TRUE(db_->Put(wo_, "k", std::string(kMaxValueSize + 1, 'v')).IsInvalidArgument());
  EXPECT_TRUE(db_->Delete(wo_, std::string(kMaxKeySize + 1, 'k')).IsInvalidArgument());
  ASSERT_TRUE(db_->Put(wo_, std::string(kMaxKeySize, 'k'), std::string(1 << 20, 'v')).ok());
  Reopen();
  EXPECT_EQ(Get(std::string(kMaxKeySize, 'k')).size(), 1u << 20);
}

TEST_F(DBTest, WriteAsyncCallsBackOnceDurable) {
  Reopen();
  constexpr int kWrites = 2000;
  std::atomic<int> ok{0}, calls{0};
  for (int i = 0; i < kWrites; i++) {
    WriteBatch b;
    b.Put("async" + std::to_string(i), std::to_string(i));
    db_->WriteAsync(wo_, std::move(b), [&](Status s) {
      calls++;
      if (s.ok()) ok++;
    });
  }
  db_.reset();  // waits for every callback
  EXPECT_EQ(calls.load(), kWrites);
  EXPECT_EQ(ok.load(), kWrites);
  Reopen();
  EXPECT_EQ(Get("async0"), "0");
  EXPECT_EQ(Get("async1999"), "1999");
  // Async writes share fsyncs: far fewer syncs than writes.
  WriteBatch bad;
  bad.Put(std::string(kMaxKeySize + 1, 'k'), "");
  Status seen;
  db_->WriteAsync(wo_, std::move(bad), [&](Status s) { seen = s; });
  EXPECT_TRUE(seen.IsInvalidArgument());
}

TEST_F(DBTest, GroupCommitSharesFsyncs) {
  Reopen();
  constexpr int kThreads = 16, kPerThread = 100;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; i++) {
        if (!db_->Put(wo_, "t" + std::to_string(t) + "-" + std::to_string(i), "v").ok()) failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  DBStats st = db_->GetStats();
  EXPECT_EQ(st.writes, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_LT(st.wal_syncs, st.writes);  // with 16 writers at once, groups form
  EXPECT_EQ(st.live_keys_estimate, static_cast<uint64_t>(kThreads * kPerThread));
}

// Group commit acknowledges a whole group with one wakeup, and a writer that
// fills a group leads it in place of the writer waiting for it to fill.
// Whoever leads, a synchronous write returns only once it is visible and
// synced: each writer reads its own write back at once, and a power cut
// after the last acknowledgement loses none of them. Half the writers write
// 200 KiB values: a group that starts with a small batch stops before a big
// one, so the writer that fills a group is often left out of it and must
// lead on until its own write is committed.
TEST_F(DBTest, SyncedWritesAreVisibleAndDurableWhenAcknowledged) {
  FaultInjectionEnv& env = fault_env_;
  options_.env = &env;
  Reopen();
  constexpr int kThreads = 8, kPerThread = 150;
  auto key_of = [](int t, int i) { return std::to_string(t) + "-" + std::to_string(i); };
  auto value_of = [](int t, int i) {
    return std::string(t % 2 == 0 ? 100 : 200 << 10, static_cast<char>('a' + (i + t) % 26));
  };
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; i++) {
        if (!db_->Put(wo_, key_of(t, i), value_of(t, i)).ok() || Get(key_of(t, i)) != value_of(t, i)) failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  DBStats st = db_->GetStats();
  EXPECT_LT(st.wal_syncs, st.writes);  // groups formed
  env.SetActive(false);  // power cut
  db_.reset();
  ASSERT_TRUE(env.DropUnsyncedData().ok());
  env.SetActive(true);
  Reopen();
  for (int t = 0; t < kThreads; t++) {
    for (int i = 0; i < kPerThread; i++) ASSERT_EQ(Get(key_of(t, i)), value_of(t, i)) << key_of(t, i);
  }
}

// Asynchronous writes fill groups that a synchronous writer waits on before
// it leads: the committer then leads in its place. Every write is
// acknowledged (none is left waiting for a leader) and survives a power cut.
TEST_F(DBTest, AsyncWritesFillingAGroupHandItToTheCommitter) {
  FaultInjectionEnv& env = fault_env_;
  options_.env = &env;
  Reopen();
  constexpr int kThreads = 4, kPerThread = 300;
  std::atomic<int> failures{0}, callbacks{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2 * kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; i++) {
        const std::string key = std::to_string(t) + "-" + std::to_string(i);
        if (t % 2 == 0) {
          if (!db_->Put(wo_, key, "v").ok()) failures++;
        } else {
          WriteBatch b;
          b.Put(key, "v");
          std::promise<Status> done;
          db_->WriteAsync(wo_, std::move(b), [&](Status s) {
            callbacks++;
            done.set_value(s);
          });
          if (!done.get_future().get().ok()) failures++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(callbacks.load(), kThreads * kPerThread);
  env.SetActive(false);
  db_.reset();
  ASSERT_TRUE(env.DropUnsyncedData().ok());
  env.SetActive(true);
  Reopen();
  for (int t = 0; t < 2 * kThreads; t++) {
    for (int i = 0; i < kPerThread; i++) ASSERT_EQ(Get(std::to_string(t) + "-" + std::to_string(i)), "v");
  }
}

// An fdatasync that fails under concurrent writers fails the writes that
// depended on it and every later one; none is left waiting, and every write
// acknowledged before it survives a power cut.
TEST_F(DBTest, FailedFsyncUnderConcurrentWritersFailsTheRestAndLosesNothingAcknowledged) {
  FaultInjectionEnv& env = fault_env_;
  options_.env = &env;
  Reopen();
  constexpr int kThreads = 8, kPerThread = 200;
  std::vector<std::vector<std::string>> acknowledged(kThreads);
  std::atomic<int> unexpected{0};
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      started++;
      for (int i = 0; i < kPerThread; i++) {
        const std::string key = "k" + std::to_string(t) + "-" + std::to_string(i);
        Status s = db_->Put(wo_, key, "v");
        if (s.ok()) {
          acknowledged[t].push_back(key);
        } else if (!s.IsIOError() && !s.IsReadOnly()) {
          unexpected++;
        }
      }
    });
  }
  while (started.load() < kThreads) std::this_thread::yield();
  env.FailSyncAfter(20);
  for (auto& t : threads) t.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_TRUE(db_->GetStats().read_only);
  size_t total = 0;
  for (auto& keys : acknowledged) total += keys.size();
  EXPECT_LT(total, static_cast<size_t>(kThreads * kPerThread));
  env.SetActive(false);
  db_.reset();
  ASSERT_TRUE(env.DropUnsyncedData().ok());
  env.SetActive(true);
  Reopen();
  for (auto& keys : acknowledged) {
    for (const std::string& key : keys) ASSERT_EQ(Get(key), "v") << key;
  }
}

TEST_F(DBTest, MemtableRotationKeepsEverything) {
  options_.memtable_budget = 64 * 1024;
  Reopen();
  for (int i = 0; i < 5000; i++) {
    ASSERT_TRUE(db_->Put(WriteOptions{.sync = false}, "key" + std::to_string(i % 1500),
                         std::string(100, 'a' + i % 26)).ok());
  }
  DBStats st = db_->GetStats();
  // Full memtables were flushed to tables and their WAL segments deleted.
  EXPECT_GT(st.flushes, 2u);
  EXPECT_LE(st.immutable_memtables, 1u);
  EXPECT_LE(st.wal_segments, 3u);
  EXPECT_LE(std::count_if(std::filesystem::directory_iterator(dir_), std::filesystem::directory_iterator(),
                          [](const auto& e) { return e.path().extension() == ".log"; }),
            3);
  std::string before = Contents();
  EXPECT_EQ(Get("key1499"), std::string(100, 'a' + 4499 % 26));
  Reopen();
  EXPECT_EQ(Contents(), before);
}

TEST_F(DBTest, StatsAndProperties) {
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "a", "1").ok());
  DBStats st = db_->GetStats();
  EXPECT_EQ(st.sequence, 1u);
  EXPECT_GT(st.wal_bytes, 0u);
  EXPECT_GT(st.memtable_bytes, 0u);
  EXPECT_EQ(st.live_keys_estimate, 1u);
  EXPECT_FALSE(st.read_only);
  std::string v;
  ASSERT_TRUE(db_->GetProperty("kvstore.wal_bytes", &v));
  EXPECT_EQ(v, std::to_string(st.wal_bytes));
  ASSERT_TRUE(db_->GetProperty("kvstore.stats", &v));
  EXPECT_NE(v.find("live_keys_estimate: 1"), std::string::npos);
  EXPECT_FALSE(db_->GetProperty("kvstore.nope", &v));
  EXPECT_FALSE(db_->GetProperty("other", &v));
}

// --- tables: flush, compaction, checkpoints --------------------------------

TEST_F(DBTest, FlushWritesATableAndDropsItsWal) {
  Reopen();
  for (int i = 0; i < 1000; i++) ASSERT_TRUE(db_->Put(wo_, "k" + std::to_string(i), "v" + std::to_string(i)).ok());
  ASSERT_TRUE(db_->Flush().ok());
  DBStats st = db_->GetStats();
  EXPECT_EQ(st.levels[0].files, 1u);
  EXPECT_EQ(st.flushes, 1u);
  EXPECT_EQ(st.immutable_memtables, 0u);
  EXPECT_EQ(LogFiles().size(), 1u);  // only the segment taking new writes
  EXPECT_EQ(Get("k500"), "v500");
  ASSERT_TRUE(db_->Delete(wo_, "k500").ok());
  Reopen();
  EXPECT_EQ(Get("k499"), "v499");
  EXPECT_EQ(Get("k500"), "NOT_FOUND");  // the deletion in the WAL shadows the table
  EXPECT_EQ(db_->GetStats().levels[0].files, 1u);
}

// An Env whose table files, once armed, stop at their first append until
// the test opens the gate: it holds a compaction in the middle of its work.
class GateEnv final : public Env {
 public:
  void Arm() {
    std::lock_guard lock(mu_);
    armed_ = true;
  }
  void WaitEntered() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return entered_; });
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Pass() {
    std::unique_lock lock(mu_);
    if (!armed_) return;
    entered_ = true;
    cv_.notify_all();
    cv_.wait(lock, [this] { return open_; });
  }

  Status NewSequentialFile(const std::string& p, std::unique_ptr<SequentialFile>* r) override {
    return base_->NewSequentialFile(p, r);
  }
  Status NewRandomAccessFile(const std::string& p, std::unique_ptr<RandomAccessFile>* r) override {
    return base_->NewRandomAccessFile(p, r);
  }
  Status NewWritableFile(const std::string& p, std::unique_ptr<WritableFile>* r) override {
    Status s = base_->NewWritableFile(p, r);
    if (s.ok() && p.ends_with(".sst")) *r = std::make_unique<File>(this, std::move(*r));
    return s;
  }
  Status NewAppendableFile(const std::string& p, std::unique_ptr<WritableFile>* r) override {
    return base_->NewAppendableFile(p, r);
  }
  bool FileExists(const std::string& p) override { return base_->FileExists(p); }
  Status GetChildren(const std::string& d, std::vector<std::string>* n) override { return base_->GetChildren(d, n); }
  Status GetFileSize(const std::string& p, uint64_t* n) override { return base_->GetFileSize(p, n); }
  Status RemoveFile(const std::string& p) override { return base_->RemoveFile(p); }
  Status RenameFile(const std::string& f, const std::string& t) override { return base_->RenameFile(f, t); }
  Status TruncateFile(const std::string& p, uint64_t n) override { return base_->TruncateFile(p, n); }
  Status LinkFile(const std::string& f, const std::string& t) override { return base_->LinkFile(f, t); }
  Status CreateDir(const std::string& d) override { return base_->CreateDir(d); }
  Status SyncDir(const std::string& d) override { return base_->SyncDir(d); }
  Status LockFile(const std::string& p, std::unique_ptr<FileLock>* l) override { return base_->LockFile(p, l); }

 private:
  class File final : public WritableFile {
   public:
    File(GateEnv* env, std::unique_ptr<WritableFile> base) : env_(env), base_(std::move(base)) {}
    Status Append(std::string_view data) override {
      env_->Pass();
      return base_->Append(data);
    }
    Status Sync() override { return base_->Sync(); }
    Status Truncate(uint64_t size) override { return base_->Truncate(size); }
    Status Close() override { return base_->Close(); }

   private:
    GateEnv* const env_;
    std::unique_ptr<WritableFile> base_;
  };
  Env* const base_ = Env::Default();
  std::mutex mu_;
  std::condition_variable cv_;
  bool armed_ = false, entered_ = false, open_ = false;
};

class DBGateTest : public DBTest {
 protected:
  // Outlive db_, which TearDown resets.
  GateEnv gate_;
  FaultInjectionEnv fault_{&gate_};
};

// A CompactRange whose compaction is already running when the store turns
// read-only waits for it to end: the request lives on the caller's stack and
// the background thread writes its outcome there. (It used to return at
// once; the background thread then wrote into the dead frame and popped an
// empty queue.)
TEST_F(DBGateTest, CompactRangeWaitsForItsRunningCompactionWhenReadOnly) {
  options_.env = &fault_;
  Reopen();
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < 100; i++) ASSERT_TRUE(db_->Put(wo_, "k" + std::to_string(i), "r").ok());
    ASSERT_TRUE(db_->Flush().ok());
  }
  gate_.Arm();
  auto compacted = std::async(std::launch::async, [this] { return db_->CompactRange("", ""); });
  gate_.WaitEntered();  // the compaction is writing its output
  fault_.FailSyncAfter(1);
  ASSERT_TRUE(db_->Put(wo_, "x", "1").IsIOError());  // a failed WAL fsync: read-only
  EXPECT_TRUE(db_->GetStats().read_only);
  EXPECT_EQ(compacted.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout)
      << "CompactRange returned while its compaction was still running";
  gate_.Open();
  Status s = compacted.get();
  EXPECT_TRUE(s.ok() || s.IsReadOnly()) << s.ToString();
  EXPECT_EQ(Get("k7"), "r");
}

TEST_F(DBTest, CompactRangeDropsOverwrittenAndDeleted) {
  Reopen();
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 500; i++) {
      ASSERT_TRUE(db_->Put(wo_, "k" + std::to_string(i), "r" + std::to_string(round)).ok());
    }
    ASSERT_TRUE(db_->Flush().ok());
  }
  for (int i = 0; i < 250; i++) ASSERT_TRUE(db_->Delete(wo_, "k" + std::to_string(i)).ok());
  ASSERT_TRUE(db_->CompactRange("", "").ok());
  DBStats st = db_->GetStats();
  EXPECT_EQ(st.levels[0].files, 0u);
  EXPECT_EQ(st.live_keys_estimate, 250u);  // one entry per live key is left in the tables
  EXPECT_GT(st.compactions, 0u);
  EXPECT_EQ(Get("k0"), "NOT_FOUND");
  EXPECT_EQ(Get("k499"), "r2");
  int n = 0;
  auto it = db_->NewIterator(ReadOptions{});
  for (it->SeekToFirst(); it->Valid(); it->Next()) n++;
  EXPECT_EQ(n, 250);
  EXPECT_TRUE(it->status().ok());
}

TEST_F(DBTest, SnapshotsSurviveCompaction) {
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "k", "old").ok());
  ASSERT_TRUE(db_->Put(wo_, "gone", "here").ok());
  const Snapshot* snap = db_->GetSnapshot();
  ASSERT_TRUE(db_->Put(wo_, "k", "new").ok());
  ASSERT_TRUE(db_->Delete(wo_, "gone").ok());
  ASSERT_TRUE(db_->CompactRange("", "").ok());
  EXPECT_EQ(Get("k", snap), "old");
  EXPECT_EQ(Get("gone", snap), "here");
  EXPECT_EQ(Get("k"), "new");
  EXPECT_EQ(Get("gone"), "NOT_FOUND");
  db_->ReleaseSnapshot(snap);
  ASSERT_TRUE(db_->CompactRange("", "").ok());
  EXPECT_EQ(db_->GetStats().live_keys_estimate, 1u);
}

TEST_F(DBTest, CheckpointOpensAsAStore) {
  options_.memtable_budget = 64 * 1024;
  Reopen();
  for (int i = 0; i < 3000; i++) ASSERT_TRUE(db_->Put(wo_, "k" + std::to_string(i), std::string(50, 'a')).ok());
  ASSERT_TRUE(db_->Delete(wo_, "k7").ok());
  const std::string cp = dir_ + "-checkpoint";
  std::filesystem::remove_all(cp);
  ASSERT_TRUE(db_->Checkpoint(cp).ok());
  EXPECT_TRUE(db_->Checkpoint(cp).IsInvalidArgument());  // exists
  ASSERT_TRUE(db_->Put(wo_, "after", "checkpoint").ok());
  const std::string before = Contents();
  std::unique_ptr<DB> copy;
  ASSERT_TRUE(DB::Open(options_, cp, &copy).ok());
  std::string v;
  EXPECT_TRUE(copy->Get(ReadOptions{}, "k2999", &v).ok());
  EXPECT_TRUE(copy->Get(ReadOptions{}, "k7", &v).IsNotFound());
  EXPECT_TRUE(copy->Get(ReadOptions{}, "after", &v).IsNotFound());
  int n = 0;
  auto it = copy->NewIterator(ReadOptions{});
  for (it->SeekToFirst(); it->Valid(); it->Next()) n++;
  EXPECT_EQ(n, 2999);
  it.reset();
  copy.reset();
  EXPECT_EQ(Contents(), before);  // the original is untouched
  std::filesystem::remove_all(cp);
}

// Checkpoints taken while synced writes keep overwriting the zeros ahead
// of the newest segment's records: each opens, with every write that was
// acknowledged before it started.
TEST_F(DBTest, CheckpointsDuringSyncedWritesOpen) {
  Reopen();
  // Large values from a few threads, so that the records move on by more
  // than the copy's 1 MiB reads between two of them.
  constexpr int kWriters = 4;
  std::atomic<int> acked[kWriters] = {};
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; t++) {
    writers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); i++) {
        if (!db_->Put(wo_, "k" + std::to_string(t) + "-" + std::to_string(i), std::string(60000, 'v')).ok()) return;
        acked[t].store(i + 1);
      }
    });
  }
  for (int c = 0; c < 20; c++) {
    const std::string cp = dir_ + "-checkpoint" + std::to_string(c);
    std::filesystem::remove_all(cp);
    int before[kWriters];
    for (int t = 0; t < kWriters; t++) before[t] = acked[t].load();
    ASSERT_TRUE(db_->Checkpoint(cp).ok());
    std::unique_ptr<DB> copy;
    Status s = DB::Open(options_, cp, &copy);
    ASSERT_TRUE(s.ok()) << "checkpoint " << c << ": " << s.ToString();
    std::string v;
    for (int t = 0; t < kWriters; t++) {
      if (before[t] > 0) {
        EXPECT_TRUE(copy->Get(ReadOptions{}, "k" + std::to_string(t) + "-" + std::to_string(before[t] - 1), &v).ok())
            << c;
      }
    }
    copy.reset();
    std::filesystem::remove_all(cp);
  }
  stop.store(true);
  for (auto& w : writers) w.join();
}

TEST_F(DBTest, OrphanTablesAreRemovedAtOpen) {
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "a", "1").ok());
  db_.reset();
  const std::string orphan = dir_ + "/000999.sst";
  { std::ofstream(orphan) << "half a table from a crash"; }
  Reopen();
  EXPECT_FALSE(std::filesystem::exists(orphan));
  EXPECT_EQ(Get("a"), "1");
}

TEST_F(DBTest, TruncatedTableIsAClearErrorAtOpen) {
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "a", "1").ok());
  ASSERT_TRUE(db_->Flush().ok());
  db_.reset();
  std::string table;
  for (auto& e : std::filesystem::directory_iterator(dir_)) {
    if (e.path().extension() == ".sst") table = e.path().string();
  }
  ASSERT_FALSE(table.empty());
  std::filesystem::resize_file(table, 0);
  Status s = Open();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.ToString().find(table), std::string::npos) << s.ToString();
}

TEST_F(DBTest, DamagedTableBlockIsReportedNotMisread) {
  options_.compression = false;
  Reopen();
  for (int i = 0; i < 2000; i++) ASSERT_TRUE(db_->Put(wo_, "k" + std::to_string(i), std::string(40, 'v')).ok());
  ASSERT_TRUE(db_->Flush().ok());
  db_.reset();
  std::string table;
  for (auto& e : std::filesystem::directory_iterator(dir_)) {
    if (e.path().extension() == ".sst") table = e.path().string();
  }
  {
    std::fstream f(table, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);  // inside the first data block
    f.put('\x55');
  }
  Reopen();
  auto it = db_->NewIterator(ReadOptions{});
  int n = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) n++;
  EXPECT_TRUE(it->status().IsCorruption()) << it->status().ToString();
  EXPECT_NE(it->status().ToString().find(".sst"), std::string::npos);
  std::string v;
  bool saw_corruption = false;
  for (int i = 0; i < 2000; i++) {
    Status s = db_->Get(ReadOptions{}, "k" + std::to_string(i), &v);
    ASSERT_TRUE(s.ok() || s.IsCorruption()) << s.ToString();
    saw_corruption |= s.IsCorruption();
    if (s.ok()) {
      ASSERT_EQ(v, std::string(40, 'v'));
    }
  }
  EXPECT_TRUE(saw_corruption);
}

// --- recovery from damaged WAL segments -----------------------------------

TEST_F(DBTest, TornTailIsTruncatedAndOpens) {
  Reopen();
  for (int i = 0; i < 100; i++) ASSERT_TRUE(db_->Put(wo_, "k" + std::to_string(i), "v").ok());
  db_.reset();
  std::string log = LogFiles().back();
  uint64_t size = std::filesystem::file_size(log);
  std::filesystem::resize_file(log, size - 3);  // cut the last record
  Reopen();
  EXPECT_EQ(Get("k98"), "v");
  EXPECT_EQ(Get("k99"), "NOT_FOUND");
  // The truncation is durable and the segment is clean when no longer last.
  Reopen();
  EXPECT_EQ(Get("k98"), "v");
}

TEST_F(DBTest, CorruptionBeforeTheTailFailsOpen) {
  Reopen();
  for (int i = 0; i < 100; i++) ASSERT_TRUE(db_->Put(wo_, "k" + std::to_string(i), "v").ok());
  db_.reset();
  std::string log = LogFiles().back();
  {
    std::fstream f(log, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(wal::kFileHeaderSize + 30);
    f.put('\x7f');
  }
  Status s = Open();
  ASSERT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.ToString().find(log), std::string::npos);
  EXPECT_NE(s.ToString().find("offset"), std::string::npos);

  options_.best_effort_recovery = true;
  Reopen();  // keeps what precedes the damage
  EXPECT_EQ(Get("k0"), "v");
  EXPECT_EQ(Get("k99"), "NOT_FOUND");
  ASSERT_TRUE(db_->Put(wo_, "later", "ok").ok());
  options_.best_effort_recovery = false;
  Reopen();  // the damage was cut off
  EXPECT_EQ(Get("later"), "ok");
}

// The offset and physical size of each record in a WAL segment.
std::vector<std::pair<uint64_t, uint64_t>> RecordSpans(const std::string& path) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  std::unique_ptr<SequentialFile> file;
  EXPECT_TRUE(Env::Default()->NewSequentialFile(path, &file).ok());
  wal::LogReader reader(std::move(file), path);
  EXPECT_TRUE(reader.ReadHeader().ok());
  for (;;) {
    std::string_view record;
    uint64_t offset = 0;
    if (reader.Read(&record, &offset) != wal::LogReader::Result::kRecord) break;
    out.emplace_back(offset, wal::kHeaderSize + record.size());
  }
  return out;
}

void ZeroRange(const std::string& path, uint64_t offset, uint64_t n) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(std::string(n, '\0').data(), static_cast<std::streamsize>(n));
}

TEST_F(DBTest, SegmentsEndAtTheirLastRecordOnceClosed) {
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "a", "1").ok());
  db_.reset();
  // The zeros written ahead of the records are cut off on close.
  std::string log = LogFiles().back();
  auto spans = RecordSpans(log);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(std::filesystem::file_size(log), spans[0].first + spans[0].second);
  // As if the process had died: zeros after the last record are its end.
  std::filesystem::resize_file(log, std::filesystem::file_size(log) + (1 << 20));
  Reopen();
  EXPECT_EQ(Get("a"), "1");
  ASSERT_TRUE(db_->Put(wo_, "b", "2").ok());
  Reopen();  // the zeros were cut off before the segment stopped being the newest
  EXPECT_EQ(Get("a"), "1");
  EXPECT_EQ(Get("b"), "2");
}

// After a power failure the unsynced overwrites of zeros written ahead may
// come back in any order: a lost record, a later one intact. Nothing of it
// was acknowledged as durable, so it is a torn tail.
TEST_F(DBTest, PowerLossHoleInUnsyncedTailIsATornTail) {
  Reopen();
  ASSERT_TRUE(db_->Put(WriteOptions{.sync = true}, "a", "1").ok());
  ASSERT_TRUE(db_->Put(WriteOptions{.sync = false}, "b", "2").ok());
  ASSERT_TRUE(db_->Put(WriteOptions{.sync = false}, "c", "3").ok());
  db_.reset();
  std::string log = LogFiles().back();
  auto spans = RecordSpans(log);
  ASSERT_EQ(spans.size(), 3u);
  ZeroRange(log, spans[1].first, spans[1].second);
  Reopen();
  EXPECT_EQ(Get("a"), "1");
  EXPECT_EQ(Get("b"), "NOT_FOUND");
  EXPECT_EQ(Get("c"), "NOT_FOUND");  // after the hole: history stops at it
  ASSERT_TRUE(db_->Put(wo_, "d", "4").ok());
  Reopen();
  EXPECT_EQ(Get("c"), "NOT_FOUND");
  EXPECT_EQ(Get("d"), "4");
}

// The same hole where a synced write was: a later group's sync mark says
// the segment had been synced past it, so the data was lost, not torn.
TEST_F(DBTest, LostSyncedRecordIsCorruptionEvenInTheNewestSegment) {
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "a", "1").ok());
  ASSERT_TRUE(db_->Put(wo_, "b", "2").ok());
  ASSERT_TRUE(db_->Put(wo_, "c", "3").ok());
  db_.reset();
  std::string log = LogFiles().back();
  auto spans = RecordSpans(log);
  ASSERT_EQ(spans.size(), 3u);
  ZeroRange(log, spans[1].first, spans[1].second);
  Status s = Open();
  ASSERT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.ToString().find("sync mark"), std::string::npos) << s.ToString();
  options_.best_effort_recovery = true;
  Reopen();
  EXPECT_EQ(Get("a"), "1");
  EXPECT_EQ(Get("c"), "NOT_FOUND");
}

TEST_F(DBTest, DamageInOlderSegmentIsCorruption) {
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "a", "1").ok());
  db_.reset();
  std::string first = LogFiles().back();
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "b", "2").ok());
  db_.reset();
  std::filesystem::resize_file(first, std::filesystem::file_size(first) - 1);
  EXPECT_TRUE(Open().IsCorruption());
  options_.best_effort_recovery = true;
  Reopen();
  EXPECT_EQ(Get("a"), "NOT_FOUND");
  EXPECT_EQ(Get("b"), "NOT_FOUND");  // set aside: it came after the gap
  bool skipped = false;
  for (auto& e : std::filesystem::directory_iterator(dir_)) {
    skipped |= e.path().string().ends_with(".skipped");
  }
  EXPECT_TRUE(skipped);
}

TEST_F(DBTest, NewerFormatVersionIsRefused) {
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "a", "1").ok());
  db_.reset();
  std::string log = LogFiles().back();
  {
    std::fstream f(log, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f.write("NOTAWAL!", 8);
  }
  Status s = Open();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

// --- injected faults ------------------------------------------------------

TEST_F(DBTest, FailedFsyncMakesTheStoreReadOnly) {
  FaultInjectionEnv& env = fault_env_;
  options_.env = &env;
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "before", "1").ok());
  env.FailSyncAfter(1);
  Status s = db_->Put(wo_, "failing", "1");
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_EQ(Get("failing"), "NOT_FOUND");  // never acknowledged, never visible
  s = db_->Put(wo_, "after", "1");
  EXPECT_TRUE(s.IsReadOnly()) << s.ToString();
  DBStats st = db_->GetStats();
  EXPECT_TRUE(st.read_only);
  EXPECT_NE(st.read_only_reason.find("fdatasync"), std::string::npos);
  EXPECT_EQ(Get("before"), "1");  // reads go on
  Status async_status;
  WriteBatch b;
  b.Put("x", "y");
  db_->WriteAsync(wo_, std::move(b), [&](Status st2) { async_status = st2; });
  EXPECT_TRUE(async_status.IsReadOnly());
  Reopen();  // a fresh open is writable again
  EXPECT_EQ(Get("before"), "1");
  ASSERT_TRUE(db_->Put(wo_, "after", "1").ok());
}

TEST_F(DBTest, FullDiskFailsWritesThenRecovers) {
  FaultInjectionEnv& env = fault_env_;
  options_.env = &env;
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "before", "1").ok());
  env.SetSpaceLeft(10);  // the next record does not fit: a short write
  Status s = db_->Put(wo_, "big", std::string(1000, 'x'));
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(Get("big"), "NOT_FOUND");
  EXPECT_FALSE(db_->GetStats().read_only);
  env.SetSpaceLeft(-1);  // space is back
  ASSERT_TRUE(db_->Put(wo_, "after", "2").ok());
  Reopen();  // the partial append was cut off: the log replays cleanly
  EXPECT_EQ(Get("before"), "1");
  EXPECT_EQ(Get("big"), "NOT_FOUND");
  EXPECT_EQ(Get("after"), "2");
}

TEST_F(DBTest, FullDiskDuringSegmentRotationFailsWritesThenRecovers) {
  FaultInjectionEnv& env = fault_env_;
  options_.env = &env;
  options_.memtable_budget = 32 * 1024;
  Reopen();
  int i = 0;
  while (db_->GetStats().wal_segments < 2) {
    ASSERT_TRUE(db_->Put(wo_, "k" + std::to_string(i++), std::string(200, 'x')).ok());
  }
  // No space at all: appends fail, and so does the next rotation (its
  // segment header does not fit and the half-made file is removed).
  const uint64_t segments = db_->GetStats().wal_segments;
  Status s;
  env.SetSpaceLeft(0);
  for (int tries = 0; tries < 1000 && s.ok(); tries++) s = db_->Put(wo_, "k" + std::to_string(i++), std::string(200, 'y'));
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_FALSE(db_->GetStats().read_only);  // the half-made segment was removed
  EXPECT_EQ(db_->GetStats().wal_segments, segments);
  env.SetSpaceLeft(-1);
  ASSERT_TRUE(db_->Put(wo_, "after", "space").ok());
  Reopen();
  EXPECT_EQ(Get("after"), "space");
  EXPECT_EQ(Get("k0"), std::string(200, 'x'));
}

TEST_F(DBTest, ShortWriteWithIOErrorIsReadOnlyAndRecoverable) {
  FaultInjectionEnv& env = fault_env_;
  options_.env = &env;
  Reopen();
  ASSERT_TRUE(db_->Put(wo_, "before", "1").ok());
  env.FailAppendAfter(1);
  EXPECT_TRUE(db_->Put(wo_, "torn", std::string(500, 't')).IsIOError());
  EXPECT_TRUE(db_->Put(wo_, "x", "y").IsReadOnly());
  Reopen();
  EXPECT_EQ(Get("before"), "1");
  EXPECT_EQ(Get("torn"), "NOT_FOUND");
}

// Whichever fsync of a flush fails (table, directory, manifest), the store
// reopens with every acknowledged write, and Flush returns instead of
// waiting for background work that a read-only store will not do.
TEST_F(DBTest, FailedFsyncDuringFlushNeverBreaksReopen) {
  FaultInjectionEnv& env = fault_env_;
  options_.env = &env;
  for (int nth = 1; nth <= 8; nth++) {
    SCOPED_TRACE("fsync #" + std::to_string(nth) + " fails");
    std::filesystem::remove_all(dir_);
    env.FailSyncAfter(0);
    Reopen();
    std::vector<std::string> acked;
    for (int i = 0; i < 200; i++) {
      std::string k = "k" + std::to_string(i);
      if (db_->Put(wo_, k, "v").ok()) acked.push_back(k);
    }
    env.FailSyncAfter(nth);
    (void)db_->Flush();  // any outcome, but it must return
    for (int i = 200; i < 220; i++) {
      std::string k = "k" + std::to_string(i);
      if (db_->Put(wo_, k, "v").ok()) acked.push_back(k);
    }
    (void)db_->Flush();
    env.FailSyncAfter(0);
    Status s = Open();
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (const auto& k : acked) ASSERT_EQ(Get(k), "v") << k;
  }
}

TEST_F(DBTest, CrashDropsOnlyUnsyncedWrites) {
  FaultInjectionEnv& env = fault_env_;
  options_.env = &env;
  Reopen();
  ASSERT_TRUE(db_->Put(WriteOptions{.sync = true}, "synced", "1").ok());
  ASSERT_TRUE(db_->Put(WriteOptions{.sync = false}, "unsynced", "2").ok());
  env.SetActive(false);  // power cut
  db_.reset();
  ASSERT_TRUE(env.DropUnsyncedData().ok());
  env.SetActive(true);
  Reopen();
  EXPECT_EQ(Get("synced"), "1");
  EXPECT_EQ(Get("unsynced"), "NOT_FOUND");
}

}  // namespace
}  // namespace kvstore
