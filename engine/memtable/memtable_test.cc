// Memtable ordering, lookups at a sequence, live-key counting, and readers
// running while the single writer inserts.
#include "engine/memtable/memtable.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <random>
#include <thread>
#include <vector>

namespace kvstore {
namespace {

TEST(MemTableTest, OrdersByUserKeyThenNewestFirst) {
  MemTable mem(1);
  mem.Add(1, ValueType::kValue, "b", "b1");
  mem.Add(2, ValueType::kValue, "a", "a2");
  mem.Add(3, ValueType::kValue, "b", "b3");
  mem.Add(4, ValueType::kDeletion, "a", "");
  mem.Add(5, ValueType::kValue, "", "empty-key");
  auto it = mem.NewIterator();
  std::vector<std::pair<std::string, SequenceNumber>> seen;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    seen.emplace_back(std::string(ExtractUserKey(it->key())), TagSequence(ExtractTag(it->key())));
  }
  std::vector<std::pair<std::string, SequenceNumber>> want = {
      {"", 5}, {"a", 4}, {"a", 2}, {"b", 3}, {"b", 1}};
  EXPECT_EQ(seen, want);
}

// The inline word-at-a-time comparison orders keys exactly as memcmp does
// (bytes unsigned, a prefix first), at every length around its word and
// short-key limits.
TEST(MemTableTest, UserKeysCompareLikeMemcmp) {
  std::mt19937_64 rng(5);
  const char alphabet[] = {'\0', '\x01', 'a', 'b', '\x7f', '\x80', '\xfe', '\xff'};
  auto random_key = [&](size_t n) {
    std::string k(n, '\0');
    for (char& c : k) c = alphabet[rng() % sizeof alphabet];
    return k;
  };
  for (int i = 0; i < 200000; i++) {
    std::string a = random_key(rng() % 41);
    std::string b = rng() % 2 ? random_key(rng() % 41) : a.substr(0, rng() % (a.size() + 1));
    if (rng() % 3 == 0 && !b.empty()) b[rng() % b.size()] = alphabet[rng() % sizeof alphabet];
    const int want = a.compare(b) < 0 ? -1 : a.compare(b) > 0 ? 1 : 0;
    const int got = CompareUserKeys(a, b);
    ASSERT_EQ(got < 0 ? -1 : got > 0 ? 1 : 0, want) << i;
  }
}

TEST(MemTableTest, GetAtSequence) {
  MemTable mem(1);
  mem.Add(1, ValueType::kValue, "k", "v1");
  mem.Add(2, ValueType::kValue, "k", "v2");
  mem.Add(3, ValueType::kDeletion, "k", "");
  std::string v;
  EXPECT_EQ(mem.Get("k", 0, &v), MemTable::Lookup::kAbsent);
  EXPECT_EQ(mem.Get("k", 1, &v), MemTable::Lookup::kFound);
  EXPECT_EQ(v, "v1");
  EXPECT_EQ(mem.Get("k", 2, &v), MemTable::Lookup::kFound);
  EXPECT_EQ(v, "v2");
  EXPECT_EQ(mem.Get("k", 3, &v), MemTable::Lookup::kDeleted);
  EXPECT_EQ(mem.Get("k", kMaxSequenceNumber, &v), MemTable::Lookup::kDeleted);
  EXPECT_EQ(mem.Get("j", 3, &v), MemTable::Lookup::kAbsent);
  EXPECT_EQ(mem.Get("kk", 3, &v), MemTable::Lookup::kAbsent);
  std::string big(1000, 'x');
  mem.Add(4, ValueType::kValue, big, "bigkey");
  EXPECT_EQ(mem.Get(big, 4, &v), MemTable::Lookup::kFound);
  EXPECT_EQ(v, "bigkey");
}

TEST(MemTableTest, LiveKeysFollowPutsAndDeletes) {
  MemTable mem(1);
  SequenceNumber seq = 1;
  mem.Add(seq++, ValueType::kValue, "a", "1");
  mem.Add(seq++, ValueType::kValue, "a", "2");  // overwrite: still one
  mem.Add(seq++, ValueType::kValue, "b", "1");
  EXPECT_EQ(mem.live_keys(), 2);
  mem.Add(seq++, ValueType::kDeletion, "a", "");
  mem.Add(seq++, ValueType::kDeletion, "zz", "");  // delete of a missing key
  EXPECT_EQ(mem.live_keys(), 1);
  mem.Add(seq++, ValueType::kValue, "a", "3");
  EXPECT_EQ(mem.live_keys(), 2);
  EXPECT_EQ(mem.entries(), 6u);
}

TEST(MemTableTest, MatchesModelUnderRandomInserts) {
  MemTable mem(1);
  std::map<std::string, std::string> model;
  std::mt19937 rng(1);
  for (SequenceNumber seq = 1; seq <= 20000; seq++) {
    std::string key = "key" + std::to_string(rng() % 3000);
    if (rng() % 4 == 0) {
      mem.Add(seq, ValueType::kDeletion, key, "");
      model.erase(key);
    } else {
      std::string value = std::to_string(seq);
      mem.Add(seq, ValueType::kValue, key, value);
      model[key] = value;
    }
  }
  EXPECT_EQ(mem.live_keys(), static_cast<int64_t>(model.size()));
  std::string v;
  for (int i = 0; i < 3000; i++) {
    std::string key = "key" + std::to_string(i);
    auto r = mem.Get(key, kMaxSequenceNumber, &v);
    auto it = model.find(key);
    if (it == model.end()) {
      EXPECT_NE(r, MemTable::Lookup::kFound);
    } else {
      ASSERT_EQ(r, MemTable::Lookup::kFound);
      EXPECT_EQ(v, it->second);
    }
  }
}

// Runs of keys in order (which go last without a search) mixed with random
// keys and overwrites of the largest key: iteration sees every entry, in
// internal-key order, and lookups find the newest versions.
TEST(MemTableTest, InOrderRunsMixedWithRandomKeys) {
  MemTable mem(1);
  std::map<std::string, std::string> model;
  std::mt19937 rng(3);
  SequenceNumber seq = 1;
  char buf[16];
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < 500; i++) {  // ascending
      std::snprintf(buf, sizeof buf, "k%06d", round * 1000 + i);
      mem.Add(seq, ValueType::kValue, buf, std::to_string(seq));
      model[buf] = std::to_string(seq++);
    }
    for (int i = 0; i < 200; i++) {  // anywhere, including the largest key again
      std::snprintf(buf, sizeof buf, "k%06d", i == 0 ? round * 1000 + 499 : static_cast<int>(rng() % 20000));
      mem.Add(seq, ValueType::kValue, buf, std::to_string(seq));
      model[buf] = std::to_string(seq++);
    }
  }
  EXPECT_EQ(mem.entries(), seq - 1);
  EXPECT_EQ(mem.live_keys(), static_cast<int64_t>(model.size()));
  auto it = mem.NewIterator();
  std::string prev;
  uint64_t n = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next(), n++) {
    if (!prev.empty()) {
      ASSERT_LT(CompareInternalKeys(prev, it->key()), 0);
    }
    prev.assign(it->key());
  }
  EXPECT_EQ(n, seq - 1);
  std::string v;
  for (const auto& [k, want] : model) {
    ASSERT_EQ(mem.Get(k, kMaxSequenceNumber, &v), MemTable::Lookup::kFound) << k;
    ASSERT_EQ(v, want) << k;
  }
}

// One writer inserts (key i, seq i) in random order while readers check that
// whatever they see is well-formed and sorted, and that published keys are
// always found.
TEST(MemTableTest, ConcurrentReadersDuringWrites) {
  MemTable mem(1);
  constexpr int kKeys = 60000;
  std::atomic<int> published{0};
  std::atomic<bool> done{false};
  std::vector<int> order(kKeys);
  for (int i = 0; i < kKeys; i++) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(3));
  auto key_of = [](int i) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "k%08d", i);
    return std::string(buf);
  };
  std::atomic<int> failures{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; r++) {
    readers.emplace_back([&, r] {
      std::mt19937 rng(r);
      std::string v;
      while (!done.load()) {
        int n = published.load(std::memory_order_acquire);
        if (n > 0) {
          int idx = order[rng() % n];
          if (mem.Get(key_of(idx), kMaxSequenceNumber, &v) != MemTable::Lookup::kFound ||
              v != std::to_string(idx)) {
            failures++;
          }
        }
        auto it = mem.NewIterator();
        std::string prev;
        int count = 0;
        for (it->SeekToFirst(); it->Valid() && count < 2000; it->Next(), count++) {
          std::string cur(ExtractUserKey(it->key()));
          if (!prev.empty() && cur <= prev) failures++;
          prev = cur;
        }
      }
    });
  }
  for (int i = 0; i < kKeys; i++) {
    int idx = order[i];
    mem.Add(static_cast<SequenceNumber>(i + 1), ValueType::kValue, key_of(idx), std::to_string(idx));
    published.store(i + 1, std::memory_order_release);
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mem.live_keys(), kKeys);
}

// Many keys per hash bucket (a small budget gives the fewest buckets), keys
// overwritten and deleted over and over: a lookup at every snapshot finds
// what the history says, whether the hash chain answers (the newest
// version) or the skiplist (an older one).
TEST(MemTableTest, LookupsAtEverySnapshotMatchTheHistory) {
  MemTable mem(1, /*budget=*/4096);
  struct Version {
    SequenceNumber seq;
    bool deleted;
    std::string value;
  };
  std::map<std::string, std::vector<Version>> history;
  std::mt19937 rng(7);
  constexpr SequenceNumber kWrites = 6000;
  for (SequenceNumber seq = 1; seq <= kWrites; seq++) {
    std::string key = "key" + std::to_string(rng() % 500);
    const bool deleted = rng() % 5 == 0;
    std::string value = deleted ? "" : "v" + std::to_string(seq);
    mem.Add(seq, deleted ? ValueType::kDeletion : ValueType::kValue, key, value);
    history[key].push_back({seq, deleted, value});
  }
  std::string v;
  for (int probe = 0; probe < 20000; probe++) {
    std::string key = "key" + std::to_string(rng() % 520);  // some never written
    const SequenceNumber snapshot = rng() % (kWrites + 10);
    const Version* expected = nullptr;
    for (const Version& version : history[key]) {
      if (version.seq <= snapshot) expected = &version;
    }
    SequenceNumber found_seq = 0;
    const MemTable::Lookup r = mem.Get(key, snapshot, &v, &found_seq);
    if (expected == nullptr) {
      ASSERT_EQ(r, MemTable::Lookup::kAbsent) << key << " at " << snapshot;
      continue;
    }
    ASSERT_EQ(found_seq, expected->seq) << key << " at " << snapshot;
    if (expected->deleted) {
      ASSERT_EQ(r, MemTable::Lookup::kDeleted) << key << " at " << snapshot;
    } else {
      ASSERT_EQ(r, MemTable::Lookup::kFound) << key << " at " << snapshot;
      ASSERT_EQ(v, expected->value);
    }
  }
}

// Readers at the newest snapshot and at older ones while the writer keeps
// replacing the newest version of every key in the hash chains.
TEST(MemTableTest, ConcurrentLookupsAtSnapshotsDuringOverwrites) {
  MemTable mem(1, /*budget=*/1 << 16);
  constexpr int kKeys = 300;
  constexpr SequenceNumber kWrites = 200000;
  // Write s puts key s % kKeys = "s": the newest version of key k at
  // snapshot S is the largest s <= S with s % kKeys == k.
  auto key_of = [](uint64_t k) { return "k" + std::to_string(k); };
  std::atomic<SequenceNumber> published{0};
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; r++) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(r + 11);
      std::string v;
      while (!done.load()) {
        const SequenceNumber newest = published.load(std::memory_order_acquire);
        const SequenceNumber snapshot = r == 0 ? newest : newest - std::min<SequenceNumber>(newest, rng() % 2000);
        const uint64_t k = rng() % kKeys;
        SequenceNumber expected = 0;
        if (snapshot >= k) expected = snapshot - (snapshot - k) % kKeys;
        const MemTable::Lookup got = mem.Get(key_of(k), snapshot, &v);
        if (expected == 0) {
          if (got != MemTable::Lookup::kAbsent) failures++;
        } else if (got != MemTable::Lookup::kFound || v != std::to_string(expected)) {
          failures++;
        }
      }
    });
  }
  for (SequenceNumber s = 1; s <= kWrites; s++) {
    mem.Add(s, ValueType::kValue, key_of(s % kKeys), std::to_string(s));
    published.store(s, std::memory_order_release);
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mem.live_keys(), kKeys);
}

// A memtable built in blocks recycled from a retired one (huge-page blocks
// go back to a pool, not to the allocator, and are not zeroed) sees only
// its own entries.
TEST(MemTableTest, RecycledBlocksHoldNothingOfTheirLastMemtable) {
  auto key_of = [](const char* prefix, int i) { return prefix + std::to_string(i); };
  const std::string value(100, 'v');
  const size_t pooled_before = HugeBlockPool::pooled();
  {
    MemTable old(1, /*budget=*/64 << 20);
    for (int i = 0; i < 30000; i++) old.Add(static_cast<SequenceNumber>(i + 1), ValueType::kValue, key_of("old", i), value);
  }
  ASSERT_GT(HugeBlockPool::pooled(), pooled_before);  // its blocks wait for the next memtable
  MemTable mem(2, /*budget=*/64 << 20);
  for (int i = 0; i < 20000; i++) mem.Add(static_cast<SequenceNumber>(i + 1), ValueType::kValue, key_of("new", i), std::to_string(i));
  std::string v;
  for (int i = 0; i < 30000; i++) ASSERT_EQ(mem.Get(key_of("old", i), kMaxSequenceNumber, &v), MemTable::Lookup::kAbsent);
  for (int i = 0; i < 20000; i++) {
    ASSERT_EQ(mem.Get(key_of("new", i), kMaxSequenceNumber, &v), MemTable::Lookup::kFound);
    ASSERT_EQ(v, std::to_string(i));
  }
  int count = 0;
  auto it = mem.NewIterator();
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    ASSERT_TRUE(ExtractUserKey(it->key()).starts_with("new"));
    count++;
  }
  EXPECT_EQ(count, 20000);
  EXPECT_LE(HugeBlockPool::pooled(), HugeBlockPool::kMaxBlocks);
}

}  // namespace
}  // namespace kvstore
