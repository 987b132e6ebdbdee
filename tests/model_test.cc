// The model test: hundreds of thousands of random operations against the DB
// and against a std::map, with snapshots held across writes and reopens in
// between; every read must agree with the model. Seeded and reproducible:
// KVSTORE_SEED=<n> reruns one sequence, KVSTORE_MODEL_OPS=<n> changes its
// length.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <map>
#include <random>

#include "kvstore/db.h"

namespace kvstore {
namespace {

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : fallback;
}

class ModelTest : public ::testing::TestWithParam<size_t> {};

TEST_P(ModelTest, AgreesWithStdMap) {
  const uint64_t seed = EnvOr("KVSTORE_SEED", 20261128);
  const uint64_t ops = EnvOr("KVSTORE_MODEL_OPS", 200000);
  SCOPED_TRACE("KVSTORE_SEED=" + std::to_string(seed) + " memtable_budget=" +
               std::to_string(GetParam()));
  std::mt19937_64 rng(seed);
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("kvstore_model_" + std::to_string(::getpid()) + "_" +
                            std::to_string(GetParam())))
                              .string();
  std::filesystem::remove_all(dir);

  Options options;
  options.memtable_budget = GetParam();
  std::unique_ptr<DB> db;
  ASSERT_TRUE(DB::Open(options, dir, &db).ok());

  using Model = std::map<std::string, std::string>;
  Model model;
  struct HeldSnapshot {
    const Snapshot* snapshot;
    Model model;
  };
  std::vector<HeldSnapshot> snapshots;

  auto random_key = [&] {
    // A skewed key space: most operations hit a few thousand keys, some a
    // long tail, so overwrites, deletes of live keys and misses all happen.
    uint64_t n = rng() % 10 < 8 ? rng() % 4000 : rng() % 100000;
    return "key" + std::to_string(n);
  };
  auto random_value = [&] {
    size_t len = rng() % 8 == 0 ? rng() % 2000 : rng() % 40;
    std::string v(len, '\0');
    for (auto& c : v) c = static_cast<char>('a' + rng() % 26);
    return v;
  };
  const WriteOptions no_sync{.sync = false};

  auto check_scan = [&](const Model& m, const Snapshot* snap) {
    ReadOptions ro;
    ro.snapshot = snap;
    auto it = db->NewIterator(ro);
    std::string start = random_key();
    auto mit = m.lower_bound(start);
    it->Seek(start);
    for (int i = 0; i < 50; i++, ++mit, it->Next()) {
      if (mit == m.end()) {
        ASSERT_FALSE(it->Valid()) << "extra key " << it->key();
        return;
      }
      ASSERT_TRUE(it->Valid()) << "missing key " << mit->first;
      ASSERT_EQ(it->key(), mit->first);
      ASSERT_EQ(it->value(), mit->second);
    }
  };

  for (uint64_t op = 0; op < ops; op++) {
    // Reopens replay the whole WAL (nothing flushes yet), so they are rare.
    uint64_t dice = rng() % 8000 == 0 ? 999 : rng() % 999;
    if (dice < 380) {
      std::string k = random_key(), v = random_value();
      ASSERT_TRUE(db->Put(no_sync, k, v).ok());
      model[k] = v;
    } else if (dice < 480) {
      std::string k = random_key();
      ASSERT_TRUE(db->Delete(no_sync, k).ok());
      model.erase(k);
    } else if (dice < 600) {
      WriteBatch batch;
      // Entries apply in order, as the batch will; the batch must succeed.
      Model& after = model;
      int n = 1 + static_cast<int>(rng() % 10);
      for (int i = 0; i < n; i++) {
        std::string k = random_key();
        if (rng() % 4 == 0) {
          batch.Delete(k);
          after.erase(k);
        } else {
          std::string v = random_value();
          batch.Put(k, v);
          after[k] = v;
        }
      }
      if (rng() % 2 == 0) {
        ASSERT_TRUE(db->Write(no_sync, &batch).ok());
      } else {
        std::promise<Status> done;
        db->WriteAsync(no_sync, std::move(batch), [&](Status s) { done.set_value(s); });
        ASSERT_TRUE(done.get_future().get().ok());
      }
    } else if (dice < 880) {
      std::string k = random_key(), v;
      Status s = db->Get(ReadOptions{}, k, &v);
      auto it = model.find(k);
      if (it == model.end()) {
        ASSERT_TRUE(s.IsNotFound()) << k << " " << s.ToString();
      } else {
        ASSERT_TRUE(s.ok()) << k << " " << s.ToString();
        ASSERT_EQ(v, it->second) << k;
      }
    } else if (dice < 980) {
      check_scan(model, nullptr);
    } else if (dice < 985) {
      if (snapshots.size() < 3) {
        snapshots.push_back({db->GetSnapshot(), model});
      } else {
        size_t i = rng() % snapshots.size();
        db->ReleaseSnapshot(snapshots[i].snapshot);
        snapshots.erase(snapshots.begin() + static_cast<long>(i));
      }
    } else if (dice < 987) {
      // Flushes and compactions run in the background anyway; these force
      // them at random moments, snapshots held or not.
      if (rng() % 4 == 0) {
        std::string a = random_key(), b = random_key();
        if (b < a) std::swap(a, b);
        ASSERT_TRUE(db->CompactRange(rng() % 3 == 0 ? "" : a, rng() % 3 == 0 ? "" : b).ok());
      } else {
        ASSERT_TRUE(db->Flush().ok());
      }
    } else if (dice < 999) {
      if (!snapshots.empty()) {
        const HeldSnapshot& h = snapshots[rng() % snapshots.size()];
        std::string k = random_key(), v;
        ReadOptions ro;
        ro.snapshot = h.snapshot;
        Status s = db->Get(ro, k, &v);
        auto it = h.model.find(k);
        ASSERT_EQ(s.ok(), it != h.model.end()) << k;
        if (s.ok()) {
          ASSERT_EQ(v, it->second);
        }
        check_scan(h.model, h.snapshot);
      }
    } else {
      for (auto& h : snapshots) db->ReleaseSnapshot(h.snapshot);
      snapshots.clear();
      db.reset();
      ASSERT_TRUE(DB::Open(options, dir, &db).ok());
    }
    if (HasFatalFailure()) return;
  }
  // A full scan and the key count agree with the model at the end.
  auto it = db->NewIterator(ReadOptions{});
  auto mit = model.begin();
  for (it->SeekToFirst(); it->Valid(); it->Next(), ++mit) {
    ASSERT_NE(mit, model.end());
    ASSERT_EQ(it->key(), mit->first);
    ASSERT_EQ(it->value(), mit->second);
  }
  ASSERT_EQ(mit, model.end());
  it.reset();
  const DBStats st = db->GetStats();
  // Counters restart at each reopen; the levels show what happened.
  uint64_t deeper_tables = 0;
  for (size_t level = 1; level < st.levels.size(); level++) deeper_tables += st.levels[level].files;
  EXPECT_GT(deeper_tables, 0u);  // compactions moved data below L0
  EXPECT_TRUE(st.background_error.empty()) << st.background_error;
  for (auto& h : snapshots) db->ReleaseSnapshot(h.snapshot);
  db.reset();
  std::filesystem::remove_all(dir);
}

// A large memtable (flushed only when asked) and a tiny one (flushes and
// compactions all the time, under held snapshots and reopens).
INSTANTIATE_TEST_SUITE_P(Budgets, ModelTest, ::testing::Values(size_t{64} << 20, size_t{64} << 10));

}  // namespace
}  // namespace kvstore
