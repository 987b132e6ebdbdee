// WAL framing: round trips, fragmentation across blocks, and damage — every
// byte corrupted, the file cut at every offset — reported, never misread.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <random>

#include "engine/coding/checksum.h"
#include "engine/coding/coding.h"
#include "engine/wal/log_format.h"
#include "engine/wal/log_reader.h"
#include "engine/wal/log_writer.h"
#include "kvstore/env.h"

namespace kvstore::wal {
namespace {

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kvstore_log_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "000001.log").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void Write(const std::vector<std::string>& records) {
    std::unique_ptr<LogWriter> w;
    ASSERT_TRUE(LogWriter::Create(Env::Default(), path_, &w).ok());
    for (const auto& r : records) ASSERT_TRUE(w->AddRecord(r).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  // As the DB writes segments: zeros ahead, and a sync after every record,
  // so every record but the first follows a sync mark.
  void WriteSynced(const std::vector<std::string>& records) {
    std::unique_ptr<LogWriter> w;
    LogWriter::Options o;
    o.prefill_bytes = 64 << 10;
    o.sync_marks = true;
    ASSERT_TRUE(LogWriter::Create(Env::Default(), path_, o, &w).ok());
    for (const auto& r : records) {
      ASSERT_TRUE(w->AddRecord(r).ok());
      ASSERT_TRUE(w->Sync().ok());
    }
    ASSERT_TRUE(w->Close().ok());
  }

  struct ReadResult {
    Status header;
    std::vector<std::string> records;
    std::vector<uint64_t> bad_offsets;
    uint64_t last_record_end = 0;
    bool zero_tail = false;
    uint64_t synced_through = 0;
  };
  // Reads from memory: the damage loops below read tens of thousands of
  // variants of one file.
  class StringFile final : public SequentialFile {
   public:
    explicit StringFile(std::string data) : data_(std::move(data)) {}
    Status Read(size_t n, std::string_view* result, char* scratch) override {
      n = std::min(n, data_.size() - pos_);
      std::memcpy(scratch, data_.data() + pos_, n);
      pos_ += n;
      *result = std::string_view(scratch, n);
      return Status::OK();
    }

   private:
    std::string data_;
    size_t pos_ = 0;
  };
  ReadResult ReadAll() { return ReadAll(FileContents()); }
  ReadResult ReadAll(std::string contents) {
    ReadResult out;
    LogReader reader(std::make_unique<StringFile>(std::move(contents)), path_);
    out.header = reader.ReadHeader();
    if (!out.header.ok()) return out;
    for (;;) {
      std::string_view rec;
      uint64_t off;
      auto r = reader.Read(&rec, &off);
      if (r == LogReader::Result::kEnd) break;
      EXPECT_NE(r, LogReader::Result::kIOError);
      if (r == LogReader::Result::kRecord) out.records.emplace_back(rec);
      if (r == LogReader::Result::kBadRecord) out.bad_offsets.push_back(off);
    }
    out.last_record_end = reader.last_record_end();
    out.zero_tail = reader.zero_tail();
    out.synced_through = reader.synced_through();
    return out;
  }
  std::string FileContents() {
    std::string s;
    std::unique_ptr<SequentialFile> f;
    EXPECT_TRUE(Env::Default()->NewSequentialFile(path_, &f).ok());
    std::vector<char> buf(1 << 16);
    std::string_view got;
    do {
      EXPECT_TRUE(f->Read(buf.size(), &got, buf.data()).ok());
      s.append(got);
    } while (!got.empty());
    return s;
  }
  void SetFileContents(const std::string& s) {
    std::unique_ptr<WritableFile> f;
    ASSERT_TRUE(Env::Default()->NewWritableFile(path_, &f).ok());
    ASSERT_TRUE(f->Append(s).ok());
    ASSERT_TRUE(f->Close().ok());
  }

  void CheckTruncatedAtEveryOffset(bool synced);
  void CheckEveryByteCorrupted(bool synced);

  std::filesystem::path dir_;
  std::string path_;
};

std::string RandomString(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

TEST_F(LogTest, RoundTripSmallAndEmpty) {
  Write({"hello", "", "world"});
  auto r = ReadAll();
  ASSERT_TRUE(r.header.ok()) << r.header.ToString();
  EXPECT_EQ(r.records, (std::vector<std::string>{"hello", "", "world"}));
  EXPECT_TRUE(r.bad_offsets.empty());
}

TEST_F(LogTest, FragmentsAcrossBlocks) {
  std::mt19937_64 rng(42);
  std::vector<std::string> records;
  // Sizes around the block size, the header size and the trailer cases.
  for (size_t n : {size_t{1}, kBlockSize - kHeaderSize - kFileHeaderSize, kBlockSize - kHeaderSize,
                   kBlockSize, kBlockSize + 1, 3 * kBlockSize + 17, size_t{100}, kBlockSize - 3,
                   size_t{1000000}, size_t{5}}) {
    records.push_back(RandomString(rng, n));
  }
  Write(records);
  auto r = ReadAll();
  ASSERT_TRUE(r.header.ok());
  ASSERT_EQ(r.records.size(), records.size());
  for (size_t i = 0; i < records.size(); i++) EXPECT_EQ(r.records[i], records[i]) << i;
  EXPECT_TRUE(r.bad_offsets.empty());
}

TEST_F(LogTest, TrailerTooSmallForHeaderIsPadded) {
  // Leave exactly 6 bytes in the first block: the next record must start in
  // the second block.
  std::string first(kBlockSize - kHeaderSize - 6, 'a');
  Write({first, "next"});
  auto r = ReadAll();
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.records[1], "next");
  EXPECT_EQ(FileContents().size(), kFileHeaderSize + kBlockSize + kHeaderSize + 4);
}

TEST_F(LogTest, GroupAppendIsOneRecordEach) {
  std::unique_ptr<LogWriter> w;
  ASSERT_TRUE(LogWriter::Create(Env::Default(), path_, &w).ok());
  std::vector<std::string_view> group = {"a", "bb", "ccc"};
  ASSERT_TRUE(w->AddRecords(group).ok());
  ASSERT_TRUE(w->Sync().ok());
  ASSERT_TRUE(w->Close().ok());
  EXPECT_EQ(ReadAll().records, (std::vector<std::string>{"a", "bb", "ccc"}));
}

TEST_F(LogTest, BadHeaderAndVersion) {
  Write({"x"});
  std::string contents = FileContents();
  std::string bad = contents;
  bad[0] ^= 1;
  SetFileContents(bad);
  EXPECT_TRUE(ReadAll().header.IsCorruption());

  bad = contents;
  EncodeFixed32(bad.data() + 8, kFormatVersion + 1);
  SetFileContents(bad);
  EXPECT_TRUE(ReadAll().header.IsCorruption());  // the header checksum covers the version

  SetFileContents(contents.substr(0, 10));
  Status s = ReadAll().header;
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.ToString().find("truncated header"), std::string::npos);
}

// Every prefix of the file reads back as a prefix of the records, with any
// leftover reported as damage at the end, never as a wrong record.
TEST_F(LogTest, TruncatedAtEveryOffset) { CheckTruncatedAtEveryOffset(false); }
TEST_F(LogTest, TruncatedAtEveryOffsetWithSyncMarks) { CheckTruncatedAtEveryOffset(true); }

void LogTest::CheckTruncatedAtEveryOffset(bool synced) {
  std::mt19937_64 rng(7);
  std::vector<std::string> records;
  for (int i = 0; i < 6; i++) records.push_back(RandomString(rng, 1 + rng() % 2000));
  records.push_back(RandomString(rng, 36000));  // crosses into the second block
  if (synced) {
    WriteSynced(records);
  } else {
    Write(records);
  }
  const std::string full = FileContents();
  for (size_t cut = kFileHeaderSize; cut <= full.size(); cut++) {
    auto r = ReadAll(full.substr(0, cut));
    ASSERT_TRUE(r.header.ok());
    ASSERT_LE(r.records.size(), records.size());
    for (size_t i = 0; i < r.records.size(); i++) ASSERT_EQ(r.records[i], records[i]) << "cut " << cut;
    if (r.records.size() < records.size()) {
      // Whatever was cut is either absent or reported, and the good part ends
      // where recovery would truncate.
      ASSERT_LE(r.last_record_end, cut);
    } else {
      ASSERT_TRUE(r.bad_offsets.empty()) << "cut " << cut;
    }
  }
}

// Flipping any single byte after the header never yields a wrong record:
// every record returned is one that was written, in order, and the damage is
// reported.
TEST_F(LogTest, EveryByteCorrupted) { CheckEveryByteCorrupted(false); }
TEST_F(LogTest, EveryByteCorruptedWithSyncMarks) { CheckEveryByteCorrupted(true); }

void LogTest::CheckEveryByteCorrupted(bool synced) {
  std::mt19937_64 rng(9);
  std::vector<std::string> records;
  for (int i = 0; i < 5; i++) records.push_back(RandomString(rng, 1 + rng() % 3000));
  records.push_back(RandomString(rng, 36000));
  if (synced) {
    WriteSynced(records);
  } else {
    Write(records);
  }
  const std::string full = FileContents();
  for (size_t pos = kFileHeaderSize; pos < full.size(); pos++) {
    std::string bad = full;
    bad[pos] ^= static_cast<char>(0x40);
    auto r = ReadAll(bad);
    ASSERT_TRUE(r.header.ok());
    ASSERT_FALSE(r.bad_offsets.empty()) << "byte " << pos << " corrupted unnoticed";
    // Returned records are a subsequence of the written ones.
    size_t j = 0;
    for (const auto& rec : r.records) {
      while (j < records.size() && records[j] != rec) j++;
      ASSERT_LT(j, records.size()) << "byte " << pos << ": a record that was never written";
      j++;
    }
    // The reader resynchronizes after the damage: only the damaged record
    // goes (none, when the damage hit a sync mark).
    ASSERT_GE(r.records.size(), records.size() - 1) << "byte " << pos;
    if (!synced) {
      ASSERT_EQ(r.records.size(), records.size() - 1) << "byte " << pos;
    }
  }
}

TEST_F(LogTest, ZeroFilledTailIsTheCleanEnd) {
  Write({"one", "two"});
  const std::string written = FileContents();
  // Zeros written ahead end anywhere, across blocks, or a few bytes short of
  // a header.
  for (size_t zeros : {size_t{1}, size_t{6}, size_t{7}, size_t{4096}, size_t{3 * kBlockSize + 5}}) {
    auto r = ReadAll(written + std::string(zeros, '\0'));
    EXPECT_EQ(r.records, (std::vector<std::string>{"one", "two"})) << zeros;
    EXPECT_TRUE(r.bad_offsets.empty()) << zeros;
    EXPECT_TRUE(r.zero_tail) << zeros;
    EXPECT_EQ(r.last_record_end, written.size()) << zeros;
  }
  auto r = ReadAll(written);
  EXPECT_FALSE(r.zero_tail);
}

TEST_F(LogTest, ZerosFollowedByDataAreDamage) {
  Write({"one", "two", "three"});
  const std::string written = FileContents();
  const size_t one_end = kFileHeaderSize + kHeaderSize + 3;
  // A record's blocks lost (zeros where it was), a later record intact: what
  // a power failure can leave of unsynced overwrites of zeros written ahead.
  std::string hole = written;
  std::fill(hole.begin() + one_end, hole.begin() + one_end + kHeaderSize + 3, '\0');
  auto r = ReadAll(hole);
  EXPECT_EQ(r.records, (std::vector<std::string>{"one", "three"}));
  EXPECT_EQ(r.bad_offsets, (std::vector<uint64_t>{one_end}));
  EXPECT_FALSE(r.zero_tail);
  // Zeros, then a stray byte, then zeros again to the end.
  std::string stray = written + std::string(100, '\0');
  stray[written.size() + 50] = 1;
  r = ReadAll(stray);
  EXPECT_EQ(r.records.size(), 3u);
  EXPECT_EQ(r.bad_offsets, (std::vector<uint64_t>{written.size()}));
  EXPECT_FALSE(r.zero_tail);
}

TEST_F(LogTest, WriterKeepsZerosAheadAndCutsThemWhenFinished) {
  std::unique_ptr<LogWriter> w;
  LogWriter::Options o;
  o.prefill_bytes = 64 << 10;
  ASSERT_TRUE(LogWriter::Create(Env::Default(), path_, o, &w).ok());
  uint64_t file_size = 0;
  ASSERT_TRUE(Env::Default()->GetFileSize(path_, &file_size).ok());
  EXPECT_EQ(file_size, kFileHeaderSize + o.prefill_bytes);
  std::vector<std::string> records;
  for (int i = 0; i < 1000; i++) {  // about 100 KiB: the zeros are topped up
    records.push_back(std::string(100, static_cast<char>('a' + i % 26)));
    ASSERT_TRUE(w->AddRecord(records.back()).ok());
    ASSERT_TRUE(Env::Default()->GetFileSize(path_, &file_size).ok());
    ASSERT_GE(file_size, w->size() + o.prefill_bytes / 4) << i;
    if (i % 10 == 0) {
      ASSERT_TRUE(w->Sync().ok());  // a durable store's segment
    }
  }
  auto r = ReadAll();  // a crash now leaves this
  EXPECT_EQ(r.records, records);
  EXPECT_TRUE(r.bad_offsets.empty());
  EXPECT_TRUE(r.zero_tail);
  EXPECT_EQ(r.last_record_end, w->size());
  ASSERT_TRUE(w->Finish().ok());
  ASSERT_TRUE(Env::Default()->GetFileSize(path_, &file_size).ok());
  EXPECT_EQ(file_size, w->size());
  ASSERT_TRUE(w->Close().ok());
  r = ReadAll();
  EXPECT_EQ(r.records, records);
  EXPECT_FALSE(r.zero_tail);
}

// Zeros ahead only pay off for fdatasync: a segment that is never synced
// (a store written with sync off) gets only the first stretch, which its
// records then overwrite, and grows by its appends alone.
TEST_F(LogTest, WriterNeverSyncedWritesNoMoreZeros) {
  std::unique_ptr<LogWriter> w;
  LogWriter::Options o;
  o.prefill_bytes = 64 << 10;
  ASSERT_TRUE(LogWriter::Create(Env::Default(), path_, o, &w).ok());
  for (int i = 0; i < 1000; i++) ASSERT_TRUE(w->AddRecord(std::string(100, 'n')).ok());
  uint64_t file_size = 0;
  ASSERT_TRUE(Env::Default()->GetFileSize(path_, &file_size).ok());
  EXPECT_GT(w->size(), kFileHeaderSize + o.prefill_bytes);
  EXPECT_EQ(file_size, w->size());
  ASSERT_TRUE(w->Close().ok());
  EXPECT_EQ(ReadAll().records.size(), 1000u);
}

// With map_unsynced, groups from the first unsynced one on are stored
// through a mapping of the file instead of appended: the file must hold the
// very bytes appends would have written (sync marks included), readable as
// soon as AddRecords returns, without Close (what a killed process leaves),
// across mapping windows and for a record larger than one window.
TEST_F(LogTest, MappedGroupsWriteTheSameBytesAsAppends) {
  std::mt19937_64 rng(7);
  std::vector<std::vector<std::string>> groups;
  std::vector<bool> synced;
  for (int i = 0; i < 20; i++) {  // synced, before anything is mapped
    groups.push_back({RandomString(rng, 1 + rng() % 300)});
    synced.push_back(true);
  }
  for (int i = 0; i < 12000; i++) {  // about 3 MiB unsynced, a few synced
    std::vector<std::string> group;
    for (size_t n = 1 + rng() % 3; n > 0; n--) group.push_back(RandomString(rng, rng() % 200));
    if (i == 5000) group.push_back(RandomString(rng, 3 << 19));  // 1.5 MiB: more than a window
    groups.push_back(std::move(group));
    synced.push_back(i % 1000 == 999);
  }
  std::vector<std::string> all;
  for (const auto& g : groups) all.insert(all.end(), g.begin(), g.end());

  auto write = [&](bool map, std::unique_ptr<LogWriter>* w) {
    LogWriter::Options o;
    o.prefill_bytes = 64 << 10;
    o.sync_marks = true;
    o.map_unsynced = map;
    ASSERT_TRUE(LogWriter::Create(Env::Default(), path_, o, w).ok());
    for (size_t i = 0; i < groups.size(); i++) {
      std::vector<std::string_view> records(groups[i].begin(), groups[i].end());
      ASSERT_TRUE((*w)->AddRecords(records, synced[i]).ok()) << i;
      if (synced[i]) {
        ASSERT_TRUE((*w)->Sync().ok()) << i;
      }
    }
  };
  std::unique_ptr<LogWriter> w;
  write(false, &w);
  const uint64_t appended_size = w->size();
  ASSERT_TRUE(w->Close().ok());
  const std::string appended = FileContents();
  ASSERT_EQ(appended.size(), appended_size);

  write(true, &w);
  EXPECT_EQ(w->size(), appended_size);
  {
    std::ifstream maps("/proc/self/maps");  // the mapping is in use, not a fallback to appends
    std::string line;
    bool found = false;
    while (std::getline(maps, line)) found |= line.find(path_) != std::string::npos;
    EXPECT_TRUE(found);
  }
  std::string mapped = FileContents();  // still open: the crash of a process leaves this
  ASSERT_GT(mapped.size(), appended_size);  // the rest of the mapped window
  EXPECT_EQ(mapped.substr(0, appended_size), appended);
  auto r = ReadAll(mapped);
  EXPECT_EQ(r.records, all);
  EXPECT_TRUE(r.bad_offsets.empty());
  EXPECT_TRUE(r.zero_tail);
  EXPECT_EQ(r.last_record_end, appended_size);
  ASSERT_TRUE(w->Finish().ok());
  ASSERT_TRUE(w->Close().ok());
  EXPECT_EQ(FileContents(), appended);
}

TEST_F(LogTest, SyncMarksSayHowFarTheSegmentWasSynced) {
  std::unique_ptr<LogWriter> w;
  LogWriter::Options o;
  o.sync_marks = true;
  ASSERT_TRUE(LogWriter::Create(Env::Default(), path_, o, &w).ok());
  ASSERT_TRUE(w->AddRecord("a").ok());
  ASSERT_TRUE(w->Sync().ok());
  const uint64_t first_sync = w->size();
  ASSERT_TRUE(w->AddRecord("b").ok());  // after a mark
  ASSERT_TRUE(w->AddRecord("c").ok());  // no sync since: no mark
  ASSERT_TRUE(w->Sync().ok());
  const uint64_t second_sync = w->size();
  ASSERT_TRUE(w->AddRecord("d").ok());
  ASSERT_TRUE(w->Close().ok());
  const std::string contents = FileContents();
  EXPECT_EQ(DecodeFixed32(contents.data() + 8), kFormatVersion);
  EXPECT_EQ(contents.size(), kFileHeaderSize + 4 * (kHeaderSize + 1) + 2 * (kHeaderSize + kSyncMarkSize));
  auto r = ReadAll();
  EXPECT_EQ(r.records, (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_TRUE(r.bad_offsets.empty());
  EXPECT_EQ(r.synced_through, second_sync);
  EXPECT_EQ(ReadAll(contents.substr(0, second_sync)).synced_through, first_sync);

  // Without marks the file is version 2, which older builds read.
  Write({"x"});
  EXPECT_EQ(DecodeFixed32(FileContents().data() + 8), kVersionWithoutSyncMarks);
  // A version 2 file has no marks: the type is damage there.
  std::string v2 = contents;
  EncodeFixed32(v2.data() + 8, kVersionWithoutSyncMarks);
  EncodeFixed32(v2.data() + 12, Checksum32(std::string_view(v2.data(), 12)));
  r = ReadAll(v2);
  EXPECT_EQ(r.records.size(), 4u);
  EXPECT_EQ(r.bad_offsets.size(), 2u);
}

TEST_F(LogTest, SyncMarkNearTheEndOfABlock) {
  // Leave every room from 0 to 20 bytes at the end of the first block before
  // a mark: too small for a header (trailer), too small for a whole mark (a
  // short mark fills it), or enough.
  for (size_t room = 0; room <= 20; room++) {
    SCOPED_TRACE(room);
    std::unique_ptr<LogWriter> w;
    LogWriter::Options o;
    o.sync_marks = true;
    ASSERT_TRUE(LogWriter::Create(Env::Default(), path_, o, &w).ok());
    const std::string first(kBlockSize - kHeaderSize - room, 'f');
    ASSERT_TRUE(w->AddRecord(first).ok());
    ASSERT_TRUE(w->Sync().ok());
    ASSERT_TRUE(w->AddRecord("next").ok());
    ASSERT_TRUE(w->Close().ok());
    auto r = ReadAll();
    EXPECT_EQ(r.records, (std::vector<std::string>{first, "next"}));
    EXPECT_TRUE(r.bad_offsets.empty());
    EXPECT_EQ(r.synced_through, kFileHeaderSize + first.size() + kHeaderSize);
  }
}

}  // namespace
}  // namespace kvstore::wal
