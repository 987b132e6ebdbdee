// Concurrency under load, mainly for ThreadSanitizer (./kv tsan): writers
// (sync and async, so group commit forms groups) beside readers doing point
// reads, scans and snapshot reads, while a small memtable budget keeps the
// background thread flushing and compacting. Each writer owns its keys and
// writes increasing versions, so every read can be checked: a value never
// goes backwards, a snapshot never changes, a scan never shows half a batch.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kvstore/db.h"

namespace kvstore {
namespace {

constexpr int kWriters = 3;
constexpr int kKeysPerWriter = 50;

std::string Key(int writer, int k) { return "w" + std::to_string(writer) + "_" + std::to_string(1000 + k); }
std::string Value(uint64_t version) { return std::to_string(version) + std::string(100, 'v'); }
uint64_t Version(const std::string& value) { return std::stoull(value); }

TEST(ConcurrencyTest, WritersReadersFlushesAndCompactionsAgree) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("kvstore_concurrency_" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(dir);
  Options options;
  options.memtable_budget = 32 * 1024;  // a flush every few hundred writes
  options.block_cache_bytes = 256 * 1024;
  std::unique_ptr<DB> db;
  ASSERT_TRUE(DB::Open(options, dir, &db).ok());

  const uint64_t rounds = std::getenv("KVSTORE_CONCURRENCY_ROUNDS") != nullptr
                              ? std::strtoull(std::getenv("KVSTORE_CONCURRENCY_ROUNDS"), nullptr, 10)
                              : 30;
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::mutex error_mu;
  std::string first_error;
  auto fail = [&](const std::string& what) {
    std::lock_guard lock(error_mu);
    if (failures.fetch_add(1) == 0) first_error = what;
  };

  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; w++) {
    threads.emplace_back([&, w] {
      for (uint64_t round = 1; round <= rounds; round++) {
        // A batch of the writer's whole key range: all at one version.
        WriteBatch batch;
        for (int k = 0; k < kKeysPerWriter; k++) batch.Put(Key(w, k), Value(round));
        if (w == 0) {
          std::atomic<bool> called{false};
          Status result;
          db->WriteAsync(WriteOptions{.sync = false}, std::move(batch), [&](Status s) {
            result = s;
            called.store(true, std::memory_order_release);
          });
          while (!called.load(std::memory_order_acquire)) std::this_thread::yield();
          if (!result.ok()) fail("async write: " + result.ToString());
        } else {
          Status s = db->Write(WriteOptions{.sync = w == 1}, &batch);
          if (!s.ok()) fail("write: " + s.ToString());
        }
        if (w == 2 && round % 10 == 0) {
          Status s = db->CompactRange("", "\xff");
          if (!s.ok()) fail("compact: " + s.ToString());
        }
      }
    });
  }
  // Point readers: a key's version never goes backwards.
  for (int r = 0; r < 2; r++) {
    threads.emplace_back([&, r] {
      std::vector<uint64_t> seen(kWriters * kKeysPerWriter, 0);
      while (!done.load()) {
        for (int w = 0; w < kWriters; w++) {
          for (int k = r; k < kKeysPerWriter; k += 7) {
            std::string v;
            Status s = db->Get(ReadOptions{}, Key(w, k), &v);
            if (s.IsNotFound()) continue;
            if (!s.ok()) return fail("get: " + s.ToString());
            uint64_t& last = seen[w * kKeysPerWriter + k];
            if (Version(v) < last) return fail("version went backwards for " + Key(w, k));
            last = Version(v);
          }
        }
      }
    });
  }
  // Scanners: within one iterator (one snapshot) a writer's keys all carry
  // the same version, because each round is one batch; a snapshot read
  // agrees with the scan.
  threads.emplace_back([&] {
    while (!done.load()) {
      const Snapshot* snap = db->GetSnapshot();
      ReadOptions ro;
      ro.snapshot = snap;
      auto it = db->NewIterator(ro);
      std::vector<uint64_t> version(kWriters, 0);
      std::vector<int> count(kWriters, 0);
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        const int w = it->key()[1] - '0';
        const uint64_t v = Version(std::string(it->value()));
        if (count[w]++ == 0) {
          version[w] = v;
        } else if (v != version[w]) {
          fail("a scan saw half a batch of writer " + std::to_string(w));
        }
      }
      if (!it->status().ok()) fail("scan: " + it->status().ToString());
      for (int w = 0; w < kWriters; w++) {
        if (count[w] != 0 && count[w] != kKeysPerWriter) fail("a scan saw part of writer " + std::to_string(w));
        std::string v;
        Status s = db->Get(ro, Key(w, kKeysPerWriter - 1), &v);
        if (count[w] == 0 ? !s.IsNotFound() : !(s.ok() && Version(v) == version[w])) {
          fail("a snapshot read disagrees with the scan for writer " + std::to_string(w));
        }
      }
      it.reset();
      db->ReleaseSnapshot(snap);
      (void)db->GetStats();
    }
  });

  for (int w = 0; w < kWriters; w++) threads[w].join();
  done.store(true);
  for (size_t i = kWriters; i < threads.size(); i++) threads[i].join();
  EXPECT_EQ(failures.load(), 0) << first_error;
  EXPECT_GT(db->GetStats().flushes, 0u);

  db.reset();
  ASSERT_TRUE(DB::Open(options, dir, &db).ok());
  for (int w = 0; w < kWriters; w++) {
    for (int k = 0; k < kKeysPerWriter; k++) {
      std::string v;
      ASSERT_TRUE(db->Get(ReadOptions{}, Key(w, k), &v).ok());
      EXPECT_EQ(Version(v), rounds);
    }
  }
  db.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvstore
