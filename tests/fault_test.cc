// Storage faults end to end, through the Env seam (FaultInjectionEnv) and
// by damaging files between opens: a full disk during flush and during
// compaction (writes fail with no_space or stall, nothing acknowledged is
// lost, and the store carries on by itself once space is back), and
// truncated or bit-flipped tables and manifests (a clear error at open that
// names the file). The WAL-append and fsync cases live in engine/db_test.cc.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "engine/env/fault_injection_env.h"
#include "kvstore/db.h"

namespace kvstore {
namespace {

namespace fs = std::filesystem;

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("kvstore_fault_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    options_.env = &env_;
    options_.memtable_budget = 64 * 1024;
  }
  void TearDown() override {
    db_.reset();
    fs::remove_all(dir_);
  }
  Status Open() {
    db_.reset();
    return DB::Open(options_, dir_, &db_);
  }
  std::string Get(const std::string& key) {
    std::string v;
    Status s = db_->Get(ReadOptions{}, key, &v);
    return s.ok() ? v : s.IsNotFound() ? "NOT_FOUND" : s.ToString();
  }
  std::vector<std::string> Files(std::string_view extension_or_prefix) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      const std::string name = e.path().filename().string();
      if (e.path().extension() == extension_or_prefix || name.rfind(extension_or_prefix, 0) == 0) {
        out.push_back(e.path().string());
      }
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  // Writes until the call fails or n writes succeeded; what was
  // acknowledged goes into acked_. Without fsync: these tests reopen within
  // the process, and thousands of fsyncs would only make them slow.
  Status WriteSome(int n, const std::string& prefix) {
    for (int i = 0; i < n; i++) {
      const std::string k = prefix + std::to_string(i);
      const std::string v = std::string(200, static_cast<char>('a' + i % 26)) + k;
      Status s = db_->Put(WriteOptions{.sync = false}, k, v);
      if (!s.ok()) return s;
      acked_[k] = v;
    }
    return Status::OK();
  }
  void ExpectEveryAcknowledgedWrite() {
    for (const auto& [k, v] : acked_) ASSERT_EQ(Get(k), v) << k;
  }
  // Waits (bounded) for the background thread to get somewhere.
  template <typename Pred>
  bool WaitFor(Pred pred) {
    for (int i = 0; i < 1000; i++) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::string dir_;
  FaultInjectionEnv env_{Env::Default()};  // outlives db_
  Options options_;
  std::unique_ptr<DB> db_;
  std::map<std::string, std::string> acked_;
};

// The disk fills while a memtable is being flushed: the flush fails and is
// retried, writes that need the flush fail with no_space (or wait) rather
// than hang, the store never turns read-only, and once space is back the
// flush completes by itself and everything acknowledged is there, before
// and after a reopen.
TEST_F(FaultTest, FullDiskDuringFlushFailsWritesThenResumes) {
  ASSERT_TRUE(Open().ok());
  ASSERT_TRUE(WriteSome(50, "before").ok());
  env_.SetNoSpaceFor(".sst");  // the WAL still has room, tables do not
  Status s = WriteSome(5000, "during");
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_FALSE(db_->GetStats().read_only) << db_->GetStats().read_only_reason;
  EXPECT_NE(db_->GetStats().background_error.find("space"), std::string::npos)
      << db_->GetStats().background_error;
  EXPECT_EQ(db_->GetStats().flushes, 0u);
  ExpectEveryAcknowledgedWrite();

  env_.SetNoSpaceFor("");  // space is back: the retried flush goes through
  ASSERT_TRUE(WaitFor([&] { return db_->GetStats().immutable_memtables == 0; }));
  ASSERT_TRUE(WriteSome(300, "after").ok());
  ASSERT_TRUE(db_->Flush().ok());
  EXPECT_FALSE(db_->GetStats().read_only);
  EXPECT_GE(db_->GetStats().flushes, 1u);
  EXPECT_TRUE(db_->GetStats().background_error.empty()) << db_->GetStats().background_error;
  ExpectEveryAcknowledgedWrite();
  ASSERT_TRUE(Open().ok());
  ExpectEveryAcknowledgedWrite();
}

// The disk fills during a compaction: the compaction fails and is retried,
// reads and writes go on (the memtable still has room), the store never
// turns read-only, and once space is back the compaction completes.
TEST_F(FaultTest, FullDiskDuringCompactionIsRetriedOnceSpaceReturns) {
  ASSERT_TRUE(Open().ok());
  for (int round = 0; round < 3; round++) {
    ASSERT_TRUE(WriteSome(200, "r" + std::to_string(round) + "_").ok());
    ASSERT_TRUE(db_->Flush().ok());
  }
  ASSERT_GE(Files(".sst").size(), 2u);
  const auto tables_before = Files(".sst");
  env_.SetNoSpaceFor(".sst");
  Status s = db_->CompactRange("", "\xff");
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_FALSE(db_->GetStats().read_only) << db_->GetStats().read_only_reason;
  EXPECT_EQ(Files(".sst"), tables_before);  // the failed output was removed
  ExpectEveryAcknowledgedWrite();
  ASSERT_TRUE(WriteSome(10, "small").ok());  // the WAL has room

  env_.SetNoSpaceFor("");
  // The failed compaction's error is still the DB's last background error,
  // but it is stale: the next CompactRange (and the Flush it starts with)
  // waits for attempts of its own and succeeds at once.
  s = db_->CompactRange("", "\xff");
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(db_->GetStats().read_only);
  ExpectEveryAcknowledgedWrite();
  ASSERT_TRUE(Open().ok());
  ExpectEveryAcknowledgedWrite();
}

// No space at all, for a while, under a steady stream of writes: every
// write either succeeds or fails with no_space (never read-only, never a
// hang), and every acknowledged one survives.
TEST_F(FaultTest, WritesThroughAFullDiskLoseNothingAcknowledged) {
  ASSERT_TRUE(Open().ok());
  int failures = 0;
  for (int cycle = 0; cycle < 6; cycle++) {
    env_.SetSpaceLeft(cycle % 2 == 0 ? 20 * 1024 * (cycle + 1) : -1);
    for (int i = 0; i < 400; i++) {
      const std::string k = "c" + std::to_string(cycle) + "_" + std::to_string(i);
      const std::string v(300, static_cast<char>('a' + i % 26));
      Status s = db_->Put(WriteOptions{.sync = false}, k, v);
      if (s.ok()) {
        acked_[k] = v;
      } else {
        ASSERT_TRUE(s.IsNoSpace()) << s.ToString();
        failures++;
      }
    }
    ASSERT_FALSE(db_->GetStats().read_only) << db_->GetStats().read_only_reason;
  }
  EXPECT_GT(failures, 0);
  env_.SetSpaceLeft(-1);
  // A stale no_space from before does not fail this Flush.
  Status s = db_->Flush();
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectEveryAcknowledgedWrite();
  ASSERT_TRUE(Open().ok());
  ExpectEveryAcknowledgedWrite();
}

// --- damaged files at open --------------------------------------------------

class DamagedFileTest : public FaultTest {
 protected:
  // A store with two tables and a manifest, closed.
  void MakeStore() {
    options_.env = nullptr;
    ASSERT_TRUE(Open().ok());
    ASSERT_TRUE(WriteSome(300, "a").ok());
    ASSERT_TRUE(db_->Flush().ok());
    ASSERT_TRUE(WriteSome(300, "b").ok());
    ASSERT_TRUE(db_->Flush().ok());
    db_.reset();
  }
  static void FlipByte(const std::string& path, uint64_t offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    char c = 0;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(offset));
    f.put(static_cast<char>(c ^ 0x20));
  }
  void ExpectOpenFailsNaming(const std::string& path) {
    Status s = Open();
    EXPECT_FALSE(s.ok());
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
    EXPECT_NE(s.ToString().find(fs::path(path).filename().string()), std::string::npos) << s.ToString();
  }
};

TEST_F(DamagedFileTest, TruncatedTableNamesTheFile) {
  MakeStore();
  const std::string table = Files(".sst").front();
  fs::resize_file(table, fs::file_size(table) - 10);
  ExpectOpenFailsNaming(table);
}

// Open checks that every table the manifest names exists with its recorded
// size, but does not read the tables (that would make opening a large store
// read every index): a bit flipped inside a table of the right size is
// reported, naming the file, by the first read that needs its footer, index,
// filter or properties, and never misread.
void ExpectReadsFailNaming(DB* db, const std::string& path) {
  const std::string name = fs::path(path).filename().string();
  auto it = db->NewIterator(ReadOptions{});
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
  }
  EXPECT_TRUE(it->status().IsCorruption()) << it->status().ToString();
  EXPECT_NE(it->status().ToString().find(name), std::string::npos) << it->status().ToString();
}

TEST_F(DamagedFileTest, BitFlippedTableFooterIsReportedNamingTheFile) {
  MakeStore();
  const std::string table = Files(".sst").back();
  FlipByte(table, fs::file_size(table) - 30);  // inside the footer's handles
  ASSERT_TRUE(Open().ok());
  ExpectReadsFailNaming(db_.get(), table);
}

TEST_F(DamagedFileTest, BitFlippedTableMetaBlockIsReportedNamingTheFile) {
  MakeStore();
  const std::string table = Files(".sst").front();
  // 200 bytes from the end is in the index, filter or properties block.
  FlipByte(table, fs::file_size(table) - 200);
  ASSERT_TRUE(Open().ok());
  ExpectReadsFailNaming(db_.get(), table);
}

TEST_F(DamagedFileTest, TruncatedManifestNamesTheFile) {
  MakeStore();
  const std::string manifest = Files("MANIFEST-").front();
  fs::resize_file(manifest, 10);  // shorter than its header
  ExpectOpenFailsNaming(manifest);
}

TEST_F(DamagedFileTest, BitFlippedManifestNamesTheFile) {
  MakeStore();
  const std::string manifest = Files("MANIFEST-").front();
  // Byte 20 is inside the first edit (after the 16-byte header), which
  // every later edit builds on: corruption before valid edits.
  FlipByte(manifest, 20);
  ExpectOpenFailsNaming(manifest);
}

TEST_F(DamagedFileTest, CurrentNamingNoManifestIsAClearError) {
  MakeStore();
  {
    std::ofstream f(dir_ + "/CURRENT", std::ios::trunc);
    f << "MANIFEST-999999\n";
  }
  ExpectOpenFailsNaming(dir_ + "/MANIFEST-999999");
}

}  // namespace
}  // namespace kvstore
