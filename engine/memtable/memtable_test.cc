// Memtable ordering, lookups at a sequence, live-key counting, and readers
// running while the single writer inserts.
#include "engine/memtable/memtable.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>

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

}  // namespace
}  // namespace kvstore
