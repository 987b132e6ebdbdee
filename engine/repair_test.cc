#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/env/fault_injection_env.h"
#include "engine/filename.h"
#include "kvstore/db.h"

namespace kvstore {
namespace {

namespace fs = std::filesystem;

constexpr int kKeys = 2000;

std::string Key(int i) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "k%06d", i);
  return buf;
}
std::string Value(char gen, int i) { return std::string(1, gen) + std::to_string(i) + std::string(100, gen); }
// Three generations: every key in the older table, even keys overwritten in
// the newer table, every third key overwritten again in the WAL only.
std::string Expected(int i) {
  if (i % 3 == 0) return Value('c', i);
  if (i % 2 == 0) return Value('b', i);
  return Value('a', i);
}

class RepairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("kvstore_repair_test_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    options_.compression = false;
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
    if (s.IsNotFound()) return "NOT_FOUND";
    if (!s.ok()) return s.ToString();
    return v;
  }
  // Two tables and a WAL segment, then closed. Unsynced writes: the test
  // closes the store cleanly, and 3,000 fdatasyncs would only slow it down.
  void Fill() {
    ASSERT_TRUE(Open().ok());
    WriteOptions unsynced;
    unsynced.sync = false;
    for (int i = 0; i < kKeys; i++) ASSERT_TRUE(db_->Put(unsynced, Key(i), Value('a', i)).ok());
    ASSERT_TRUE(db_->Flush().ok());
    for (int i = 0; i < kKeys; i += 2) ASSERT_TRUE(db_->Put(unsynced, Key(i), Value('b', i)).ok());
    ASSERT_TRUE(db_->Flush().ok());
    for (int i = 0; i < kKeys; i += 3) ASSERT_TRUE(db_->Put(unsynced, Key(i), Value('c', i)).ok());
    db_.reset();
    ASSERT_EQ(Files(".sst").size(), 2u);
  }
  std::vector<std::string> Files(const std::string& suffix, const std::string& sub = "") {
    std::vector<std::string> out;
    if (!fs::exists(dir_ + sub)) return out;
    for (auto& e : fs::directory_iterator(dir_ + sub)) {
      if (e.path().filename().string().ends_with(suffix)) out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string dir_;
  Options options_;
  std::unique_ptr<DB> db_;
};

TEST_F(RepairTest, RebuildsAMissingManifest) {
  Fill();
  fs::remove(dir_ + "/CURRENT");
  for (const std::string& m : Files("")) {
    if (fs::path(m).filename().string().starts_with("MANIFEST-")) fs::remove(m);
  }
  Status s = Open();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("CURRENT"), std::string::npos) << s.ToString();

  RepairStats stats;
  ASSERT_TRUE(DB::Repair(options_, dir_, &stats).ok());
  EXPECT_EQ(stats.tables, 3u);  // two tables and the WAL segment
  EXPECT_EQ(stats.logs_replayed, 1u);
  EXPECT_EQ(stats.damaged_files, 0u);
  EXPECT_EQ(stats.entries_recovered, static_cast<uint64_t>(kKeys + kKeys / 2 + (kKeys + 2) / 3));

  ASSERT_TRUE(Open().ok());
  for (int i = 0; i < kKeys; i++) ASSERT_EQ(Get(Key(i)), Expected(i)) << i;
  // Writes go on after the repair, and survive a reopen.
  ASSERT_TRUE(db_->Put(WriteOptions{}, "after", "repair").ok());
  ASSERT_TRUE(db_->Flush().ok());
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(Get("after"), "repair");
  EXPECT_EQ(Get(Key(3)), Expected(3));
}

// The repair renumbers every table it keeps. Until its new manifest is
// durable the old one must still find every table it names: a repair that
// fails there (here the disk is full for manifests) leaves a store that
// opens as before, with nothing lost.
TEST_F(RepairTest, AFailedManifestWriteLeavesTheStoreAsItWas) {
  Fill();
  FaultInjectionEnv env(Env::Default());
  env.SetNoSpaceFor("MANIFEST-");
  Options faulty = options_;
  faulty.env = &env;
  RepairStats stats;
  Status s = DB::Repair(faulty, dir_, &stats);
  ASSERT_TRUE(s.IsNoSpace()) << s.ToString();

  ASSERT_TRUE(Open().ok());
  for (int i = 0; i < kKeys; i++) ASSERT_EQ(Get(Key(i)), Expected(i)) << i;
  db_.reset();
  // Once there is room again the repair goes through.
  ASSERT_TRUE(DB::Repair(options_, dir_, &stats).ok());
  ASSERT_TRUE(Open().ok());
  for (int i = 0; i < kKeys; i++) ASSERT_EQ(Get(Key(i)), Expected(i)) << i;
}

TEST_F(RepairTest, RebuildsADamagedManifest) {
  Fill();
  std::string manifest;
  for (const std::string& m : Files("")) {
    if (fs::path(m).filename().string().starts_with("MANIFEST-")) manifest = m;
  }
  ASSERT_FALSE(manifest.empty());
  {
    std::fstream f(manifest, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(manifest) / 2));
    f.write("\xde\xad\xbe\xef", 4);
  }
  Status s = Open();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find(fs::path(manifest).filename().string()), std::string::npos) << s.ToString();

  RepairStats stats;
  ASSERT_TRUE(DB::Repair(options_, dir_, &stats).ok());
  EXPECT_TRUE(fs::exists(dir_ + "/lost/" + fs::path(manifest).filename().string()));
  ASSERT_TRUE(Open().ok());
  for (int i = 0; i < kKeys; i++) ASSERT_EQ(Get(Key(i)), Expected(i)) << i;
}

TEST_F(RepairTest, SalvagesADamagedTable) {
  Fill();
  // The older table (every key, generation 'a'): its data blocks fill the
  // front of the file, so its middle is inside one.
  const std::string damaged = Files(".sst").front();
  const auto size = fs::file_size(damaged);
  {
    std::fstream f(damaged, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size / 2));
    f.write("\xde\xad\xbe\xef", 4);
  }
  Status s = Open();
  if (s.ok()) {
    // Open checks sizes, not contents: the damage shows when read.
    bool failed = false;
    for (int i = 0; i < kKeys && !failed; i++) {
      std::string v;
      failed = !db_->Get(ReadOptions{}, Key(i), &v).ok();
    }
    EXPECT_TRUE(failed);
    db_.reset();
  }

  RepairStats stats;
  ASSERT_TRUE(DB::Repair(options_, dir_, &stats).ok());
  EXPECT_EQ(stats.tables_salvaged, 1u);
  EXPECT_EQ(stats.damaged_files, 1u);
  EXPECT_TRUE(fs::exists(dir_ + "/lost/" + fs::path(damaged).filename().string()));

  ASSERT_TRUE(Open().ok());
  int missing = 0;
  for (int i = 0; i < kKeys; i++) {
    const std::string v = Get(Key(i));
    if (v == "NOT_FOUND" && Expected(i)[0] == 'a') {
      missing++;  // its only version was in the damaged block
    } else {
      ASSERT_EQ(v, Expected(i)) << i;
    }
  }
  EXPECT_GT(missing, 0);
  EXPECT_LT(missing, 60);  // one block's worth, not more
}

TEST_F(RepairTest, RecoversWalRecordsBeforeTruncation) {
  ASSERT_TRUE(Open().ok());
  WriteOptions unsynced;  // still in the WAL file once the store is closed
  unsynced.sync = false;
  for (int i = 0; i < kKeys; i++) ASSERT_TRUE(db_->Put(unsynced, Key(i), Value('a', i)).ok());
  db_.reset();
  std::vector<std::string> logs = Files(".log");
  ASSERT_FALSE(logs.empty());
  std::string log;
  for (const std::string& l : logs) {
    if (fs::file_size(l) > fs::file_size(log.empty() ? l : log) || log.empty()) log = l;
  }
  fs::resize_file(log, fs::file_size(log) / 2 + 7);  // mid-record

  RepairStats stats;
  ASSERT_TRUE(DB::Repair(options_, dir_, &stats).ok());
  EXPECT_GT(stats.entries_recovered, 0u);
  EXPECT_LT(stats.entries_recovered, static_cast<uint64_t>(kKeys));
  EXPECT_TRUE(Files(".log").empty() || stats.logs_replayed > 0);

  ASSERT_TRUE(Open().ok());
  // A prefix of the writes, unbroken.
  int present = 0;
  while (present < kKeys && Get(Key(present)) == Value('a', present)) present++;
  EXPECT_EQ(static_cast<uint64_t>(present), stats.entries_recovered);
  for (int i = present; i < kKeys; i++) ASSERT_EQ(Get(Key(i)), "NOT_FOUND") << i;
}

TEST_F(RepairTest, SearchIndexesAreRebuilt) {
  options_.search.enabled = true;
  ASSERT_TRUE(Open().ok());
  ASSERT_TRUE(db_->Put(WriteOptions{}, "old", "\"the quick brown fox\"").ok());
  ASSERT_TRUE(db_->Flush().ok());
  ASSERT_TRUE(db_->Put(WriteOptions{}, "new", "\"a lazy dog\"").ok());
  db_.reset();
  ASSERT_FALSE(Files(".idx").empty());
  fs::remove(dir_ + "/CURRENT");

  const std::vector<std::string> old_segments = Files(".idx");
  ASSERT_TRUE(DB::Repair(options_, dir_).ok());
  // The old segments (named by the old table numbers) are gone; the
  // compaction that ends a repair wrote one per new table.
  std::vector<std::string> segments = Files(".idx"), tables = Files(".sst");
  for (const auto& s : old_segments) EXPECT_EQ(std::count(segments.begin(), segments.end(), s), 0) << s;
  for (auto& s : segments) s = s.substr(0, s.size() - 4);
  for (auto& t : tables) t = t.substr(0, t.size() - 4);
  EXPECT_EQ(segments, tables);
  ASSERT_TRUE(Open().ok());
  std::vector<SearchHit> hits;
  ASSERT_TRUE(db_->FullTextSearch("fox", {}, &hits).ok());
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].key, "old");
  ASSERT_TRUE(db_->FullTextSearch("dog", {}, &hits).ok());
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].key, "new");
}

// A WAL segment older than the manifest's log number (left behind, say, by
// a crash before its deletion) is already in the tables; after a compaction
// dropped a deletion with the value it deleted, replaying it would bring
// the value back.
TEST_F(RepairTest, StaleWalSegmentsAreNotReplayed) {
  ASSERT_TRUE(Open().ok());
  ASSERT_TRUE(db_->Put(WriteOptions{}, "gone", "old value").ok());
  const std::vector<std::string> wal = Files(".log");
  ASSERT_EQ(wal.size(), 1u);
  fs::copy_file(wal[0], dir_ + "/stale.copy");
  ASSERT_TRUE(db_->Flush().ok());
  ASSERT_TRUE(db_->Delete(WriteOptions{}, "gone").ok());
  ASSERT_TRUE(db_->CompactRange("", "").ok());
  db_.reset();
  ASSERT_FALSE(fs::exists(wal[0]));  // deleted once its memtable was in a table
  fs::rename(dir_ + "/stale.copy", wal[0]);

  RepairStats stats;
  ASSERT_TRUE(DB::Repair(options_, dir_, &stats).ok());
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(Get("gone"), "NOT_FOUND");
  EXPECT_FALSE(fs::exists(wal[0]));
  EXPECT_TRUE(fs::exists(dir_ + "/lost/" + fs::path(wal[0]).filename().string()));
}

TEST_F(RepairTest, RefusesAnOpenStore) {
  ASSERT_TRUE(Open().ok());
  ASSERT_TRUE(db_->Put(WriteOptions{}, "k", "v").ok());
  Status s = DB::Repair(options_, dir_);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(Get("k"), "v");
}

}  // namespace
}  // namespace kvstore
