// SSTable round trips, the bloom filter's false-positive rate, compression,
// and damage: every byte of a table flipped, the file cut at every offset, a
// zero-length file -> a clear error, never a crash or wrong data.
#include <gtest/gtest.h>

#include <cstring>
#include <cstdio>
#include <list>
#include <map>
#include <random>

#include "engine/coding/internal_key.h"
#include "engine/sstable/block.h"
#include "engine/sstable/block_builder.h"
#include "engine/sstable/block_cache.h"
#include "engine/sstable/bloom.h"
#include "engine/sstable/table.h"
#include "engine/sstable/table_builder.h"

namespace kvstore::sstable {
namespace {

class StringSink final : public WritableFile {
 public:
  Status Append(std::string_view data) override {
    contents.append(data);
    return Status::OK();
  }
  Status Sync() override { return Status::OK(); }
  Status Truncate(uint64_t size) override {
    contents.resize(size);
    return Status::OK();
  }
  Status Close() override { return Status::OK(); }
  std::string contents;
};

class StringSource final : public RandomAccessFile {
 public:
  explicit StringSource(std::string data) : data_(std::move(data)) {}
  Status Read(uint64_t offset, size_t n, std::string_view* result, char* scratch) const override {
    if (offset > data_.size()) return Status::IOError("read past end");
    n = std::min<size_t>(n, data_.size() - offset);
    std::memcpy(scratch, data_.data() + offset, n);
    *result = std::string_view(scratch, n);
    return Status::OK();
  }

 private:
  std::string data_;
};

std::string IKey(std::string_view user_key, SequenceNumber seq, ValueType t = ValueType::kValue) {
  std::string k;
  AppendInternalKey(&k, user_key, seq, t);
  return k;
}

std::string UserKey(int i) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "key%08d", i);
  return buf;
}

struct Entry {
  std::string key;  // internal
  std::string value;
};

// 3000 keys, some with two versions, some deleted, values of mixed sizes.
std::vector<Entry> MakeEntries(uint64_t seed, bool compressible = true) {
  std::mt19937_64 rng(seed);
  std::vector<Entry> out;
  for (int i = 0; i < 3000; i++) {
    std::string uk = UserKey(i * 3);
    size_t len = rng() % 10 == 0 ? 600 : rng() % 60;
    std::string v(len, 'a');
    for (auto& c : v) c = compressible ? static_cast<char>('a' + rng() % 4) : static_cast<char>(rng());
    if (i % 7 == 0) out.push_back({IKey(uk, 10000 + i, ValueType::kDeletion), ""});
    out.push_back({IKey(uk, 1000 + i), v});
    if (i % 5 == 0) out.push_back({IKey(uk, 10 + i), "old-" + v});
  }
  return out;
}

std::string Build(const std::vector<Entry>& entries, TableOptions options = {}) {
  StringSink sink;
  TableBuilder b(options, &sink);
  for (const auto& e : entries) b.Add(e.key, e.value);
  EXPECT_TRUE(b.Finish().ok());
  EXPECT_EQ(b.FileSize(), sink.contents.size());
  return sink.contents;
}

Status OpenTable(std::string contents, BlockCache* cache, std::unique_ptr<Table>* t) {
  const uint64_t size = contents.size();
  return Table::Open(std::make_unique<StringSource>(std::move(contents)), size, "test.sst", cache, t);
}

TEST(BlockTest, RoundTripAndSeek) {
  BlockBuilder b(4);
  std::vector<std::string> keys;
  for (int i = 0; i < 200; i++) keys.push_back(IKey(UserKey(i * 2), 1));
  for (const auto& k : keys) b.Add(k, "v" + k.substr(0, 11));
  auto contents = std::make_shared<BlockContents>(b.Finish());
  BlockIterator it(contents, CompareInternalKeys);
  size_t i = 0;
  for (it.SeekToFirst(); it.Valid(); it.Next(), i++) {
    ASSERT_EQ(it.key(), keys[i]);
    ASSERT_EQ(it.value(), "v" + keys[i].substr(0, 11));
  }
  EXPECT_EQ(i, keys.size());
  it.Seek(IKey(UserKey(101), 1));  // between keys: lands on 102
  ASSERT_TRUE(it.Valid());
  EXPECT_EQ(ExtractUserKey(it.key()), UserKey(102));
  it.Seek(IKey(UserKey(0), 1));
  EXPECT_EQ(it.key(), keys[0]);
  it.Seek(IKey(UserKey(999), 1));
  EXPECT_FALSE(it.Valid());
  EXPECT_TRUE(it.status().ok());
}

// Found by fuzz/sstable_fuzz: a key shorter than an internal key's 8-byte
// tag (damage that passed its checksum) was handed to CompareInternalKeys,
// which read the tag from before the key. It must be Corruption instead.
TEST(BlockTest, KeyShorterThanATagIsCorruption) {
  for (int restart_interval : {1, 4}) {
    BlockBuilder b(restart_interval);
    b.Add(IKey(UserKey(1), 1), "a");
    b.Add("xyz", "short");  // at a restart point with interval 1, inside a run with 4
    b.Add(IKey(UserKey(3), 1), "c");
    auto contents = std::make_shared<BlockContents>(b.Finish());
    BlockIterator it(contents, CompareInternalKeys);
    int n = 0;
    for (it.SeekToFirst(); it.Valid(); it.Next()) n++;
    EXPECT_EQ(n, 1);
    EXPECT_TRUE(it.status().IsCorruption());
    BlockIterator seek(contents, CompareInternalKeys);
    seek.Seek(IKey(UserKey(2), 1));
    EXPECT_FALSE(seek.Valid());
    EXPECT_TRUE(seek.status().IsCorruption());
  }
}

TEST(BloomTest, NoFalseNegativesAndAboutOnePercentFalsePositives) {
  BloomBuilder b(10);
  for (int i = 0; i < 20000; i++) b.Add(UserKey(i));
  std::string filter = b.Finish();
  for (int i = 0; i < 20000; i++) ASSERT_TRUE(BloomMayContain(filter, UserKey(i)));
  int fp = 0;
  for (int i = 20000; i < 120000; i++) fp += BloomMayContain(filter, UserKey(i)) ? 1 : 0;
  double rate = fp / 100000.0;
  EXPECT_LT(rate, 0.02) << rate;
  EXPECT_GT(filter.size(), 20000u * 10 / 8);
}

TEST(TableTest, IteratesEverythingInOrder) {
  auto entries = MakeEntries(1);
  std::unique_ptr<Table> t;
  ASSERT_TRUE(OpenTable(Build(entries), nullptr, &t).ok());
  EXPECT_EQ(t->properties().entries, entries.size());
  EXPECT_EQ(t->properties().smallest, entries.front().key);
  EXPECT_EQ(t->properties().largest, entries.back().key);
  EXPECT_GT(t->properties().data_blocks, 10u);
  auto it = t->NewIterator();
  size_t i = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next(), i++) {
    ASSERT_EQ(it->key(), entries[i].key);
    ASSERT_EQ(it->value(), entries[i].value);
  }
  EXPECT_EQ(i, entries.size());
  EXPECT_TRUE(it->status().ok());
}

TEST(TableTest, SeekAndGetAtSequences) {
  auto entries = MakeEntries(2);
  BlockCache cache(1 << 20);
  std::unique_ptr<Table> t;
  ASSERT_TRUE(OpenTable(Build(entries), &cache, &t).ok());
  std::string v;
  Table::Lookup r;
  // key 0 (i = 0): deleted at 10000, value at 1000, old value at 10.
  ASSERT_TRUE(t->Get(IKey(UserKey(0), kMaxSequenceNumber), &r, &v).ok());
  EXPECT_EQ(r, Table::Lookup::kDeleted);
  ASSERT_TRUE(t->Get(IKey(UserKey(0), 5000), &r, &v).ok());
  EXPECT_EQ(r, Table::Lookup::kFound);
  ASSERT_TRUE(t->Get(IKey(UserKey(0), 500), &r, &v).ok());
  EXPECT_EQ(r, Table::Lookup::kFound);
  EXPECT_EQ(v.substr(0, 4), "old-");
  ASSERT_TRUE(t->Get(IKey(UserKey(0), 5), &r, &v).ok());
  EXPECT_EQ(r, Table::Lookup::kAbsent);
  ASSERT_TRUE(t->Get(IKey(UserKey(1), kMaxSequenceNumber), &r, &v).ok());  // never written
  EXPECT_EQ(r, Table::Lookup::kAbsent);
  // Every newest value is found (and the second pass comes from the cache).
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < entries.size(); i++) {
      if (TagType(ExtractTag(entries[i].key)) != ValueType::kValue) continue;
      if (i > 0 && ExtractUserKey(entries[i - 1].key) == ExtractUserKey(entries[i].key)) continue;
      ASSERT_TRUE(t->Get(IKey(ExtractUserKey(entries[i].key), kMaxSequenceNumber), &r, &v).ok());
      ASSERT_EQ(r, Table::Lookup::kFound);
      ASSERT_EQ(v, entries[i].value);
    }
  }
  EXPECT_GT(cache.hits(), 0u);
  auto it = t->NewIterator();
  it->Seek(IKey(UserKey(4), kMaxSequenceNumber));  // between 3 and 6
  ASSERT_TRUE(it->Valid());
  EXPECT_EQ(ExtractUserKey(it->key()), UserKey(6));
  it->Seek(IKey("zzz", kMaxSequenceNumber));
  EXPECT_FALSE(it->Valid());
}

TEST(TableTest, CompressesWhenItPays) {
  auto compressible = MakeEntries(3, true);
  auto random = MakeEntries(3, false);
  TableOptions raw;
  raw.compression = Compression::kNone;
  EXPECT_LT(Build(compressible).size() * 10, Build(compressible, raw).size() * 7);
  // Incompressible blocks are stored raw, so LZ4 costs nothing.
  EXPECT_LE(Build(random).size(), Build(random, raw).size() + 64);
}

TEST(TableTest, ZeroLengthAndTruncatedFilesAreClearErrors) {
  std::unique_ptr<Table> t;
  Status s = OpenTable("", nullptr, &t);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.ToString().find("test.sst"), std::string::npos);
  auto entries = MakeEntries(4);
  entries.resize(300);
  std::string full = Build(entries);
  for (size_t cut = 0; cut < full.size(); cut++) {
    Status st = OpenTable(full.substr(0, cut), nullptr, &t);
    ASSERT_FALSE(st.ok()) << "cut at " << cut;
    ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  }
}

// Flip every byte: open fails, or reading reports corruption, or (never)
// the data read differs from what was written.
TEST(TableTest, EveryByteCorruptedIsDetected) {
  auto entries = MakeEntries(5);
  entries.resize(400);
  TableOptions small_blocks;
  small_blocks.block_size = 512;
  const std::string full = Build(entries, small_blocks);
  for (size_t pos = 0; pos < full.size(); pos++) {
    std::string bad = full;
    bad[pos] ^= 0x20;
    std::unique_ptr<Table> t;
    if (!OpenTable(bad, nullptr, &t).ok()) continue;
    auto it = t->NewIterator();
    size_t i = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next(), i++) {
      ASSERT_LT(i, entries.size()) << "byte " << pos;
      ASSERT_EQ(it->key(), entries[i].key) << "byte " << pos;
      ASSERT_EQ(it->value(), entries[i].value) << "byte " << pos;
    }
    if (i == entries.size() && it->status().ok()) {
      // Only the filter can be damaged without an iterator noticing, and
      // a damaged filter is caught when it is read.
      ADD_FAILURE() << "byte " << pos << " corrupted unnoticed";
    }
    ASSERT_TRUE(i == entries.size() || it->status().IsCorruption()) << "byte " << pos;
  }
}

TEST(BlockCacheTest, EvictsToBudget) {
  BlockCache cache(16 * 4096);
  for (uint64_t i = 0; i < 1000; i++) {
    auto b = std::make_shared<BlockContents>(std::string(1000, 'x'));
    cache.Insert(1, i * 1000, b);
  }
  EXPECT_LE(cache.usage(), cache.capacity());
  EXPECT_NE(cache.Lookup(1, 999 * 1000), nullptr);
  EXPECT_EQ(cache.Lookup(1, 0), nullptr);
}

TEST(BlockCacheTest, KeepsWhatIsUsedAndReplacesInPlace) {
  BlockCache cache(16 * 8192);
  auto block = [](char c) { return std::make_shared<BlockContents>(std::string(1000, c)); };
  cache.Insert(7, 0, block('h'));  // the hot block
  for (uint64_t i = 1; i < 5000; i++) {
    cache.Insert(1, i * 4096, block('x'));
    ASSERT_NE(cache.Lookup(1, i * 4096), nullptr) << i;  // what was just inserted is there
    ASSERT_NE(cache.Lookup(7, 0), nullptr) << i;         // used all the time: never evicted
    ASSERT_LE(cache.usage(), cache.capacity());
  }
  cache.Insert(7, 0, block('n'));  // replacing keeps one entry with the new contents
  auto got = cache.Lookup(7, 0);
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->data[0], 'n');
  EXPECT_GT(cache.hits(), 9000u);
  EXPECT_EQ(cache.Lookup(1, 4096), nullptr);  // long since evicted
}

// The index (open addressing, erase by backward shift) against a model:
// any hit holds the block last inserted under its key; a key never inserted
// never hits; and a key among the 40 most recently used (inserted or hit)
// always hits, since a shard holds 40 blocks and only keys used more
// recently can push one out. Churn over 24k keys wraps and shifts the runs.
TEST(BlockCacheTest, FindsWhatTheLruKeepsAndNothingElse) {
  constexpr size_t kBlock = 1000, kPerShard = 40;
  BlockCache cache(16 * kPerShard * (kBlock + 200));
  std::mt19937_64 rng(11);
  using Key = std::pair<uint64_t, uint64_t>;
  std::map<Key, std::string> latest;
  std::list<Key> recency;  // most recently used first
  std::map<Key, std::list<Key>::iterator> where;
  auto touch = [&](const Key& k) {
    if (auto it = where.find(k); it != where.end()) recency.erase(it->second);
    recency.push_front(k);
    where[k] = recency.begin();
  };
  for (int i = 0; i < 200000; i++) {
    const Key k{rng() % 8, (rng() % 3000) * 4096};
    if (rng() % 3 == 0) {
      std::string data(kBlock, 'a');
      std::snprintf(data.data(), data.size(), "%llu/%llu/%d", static_cast<unsigned long long>(k.first),
                    static_cast<unsigned long long>(k.second), i);
      cache.Insert(k.first, k.second, std::make_shared<BlockContents>(data));
      latest[k] = data;
      touch(k);
      auto got = cache.Lookup(k.first, k.second);
      ASSERT_NE(got, nullptr) << i;
      ASSERT_EQ(got->data, data) << i;
      continue;
    }
    bool recent = false;
    size_t n = 0;
    for (auto it = recency.begin(); it != recency.end() && n < kPerShard; ++it, ++n) recent = recent || *it == k;
    auto got = cache.Lookup(k.first, k.second);
    auto it = latest.find(k);
    if (it == latest.end()) {
      ASSERT_EQ(got, nullptr) << i;
    } else if (got != nullptr) {
      ASSERT_EQ(got->data, it->second) << i;
      touch(k);
    } else {
      ASSERT_FALSE(recent) << "evicted although among the " << kPerShard << " most recently used, op " << i;
    }
    ASSERT_LE(cache.usage(), cache.capacity());
  }
  EXPECT_GT(cache.hits(), 10000u);
  EXPECT_GT(cache.misses(), 10000u);
}

}  // namespace
}  // namespace kvstore::sstable
