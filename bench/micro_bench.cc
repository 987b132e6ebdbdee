// Micro-benchmarks of the engine's parts, below the DB API: memtable insert
// and lookup, WAL append (no sync), write batch encoding.
//
//   build/bench/micro_bench [--benchmark_filter=MemTable] [--benchmark_min_time=0.5]
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/memtable/memtable.h"
#include "engine/wal/log_writer.h"
#include "kvstore/env.h"
#include "kvstore/write_batch.h"

namespace {

constexpr size_t kKeySize = 16;
constexpr size_t kValueSize = 100;

// n distinct-enough random 16-byte keys (zero-padded decimal of a random
// number below 10^16, like kvbench's keys), in one buffer.
std::string MakeKeys(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string keys(n * kKeySize, '0');
  for (size_t i = 0; i < n; i++) {
    uint64_t k = rng() % 10000000000000000ULL;
    for (size_t j = kKeySize; j > 0; j--) {
      keys[i * kKeySize + j - 1] = static_cast<char>('0' + k % 10);
      k /= 10;
    }
  }
  return keys;
}

std::string_view KeyAt(const std::string& keys, size_t i) {
  return std::string_view(keys).substr(i * kKeySize, kKeySize);
}

const std::string& Value() {
  static const std::string value = [] {
    std::mt19937_64 rng(7);
    std::string v(kValueSize, ' ');
    for (char& c : v) c = static_cast<char>(' ' + rng() % 95);
    return v;
  }();
  return value;
}

// Inserting into a table that grows forever would measure the machine's
// memory more than the memtable: start a new table every kInsertKeys.
constexpr size_t kInsertKeys = 1 << 20;

void BM_MemTableInsert(benchmark::State& state) {
  static const std::string keys = MakeKeys(kInsertKeys, 1);
  const std::string& value = Value();
  auto mem = std::make_unique<kvstore::MemTable>(1);
  size_t i = 0;
  kvstore::SequenceNumber seq = 1;
  for (auto _ : state) {
    if (i == kInsertKeys) {
      state.PauseTiming();
      mem = std::make_unique<kvstore::MemTable>(1);
      i = 0;
      state.ResumeTiming();
    }
    mem->Add(seq++, kvstore::ValueType::kValue, KeyAt(keys, i++), value);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(kKeySize + kValueSize));
}
BENCHMARK(BM_MemTableInsert);

// Lookups that hit, on a table of 1M entries built once.
constexpr size_t kLookupKeys = 1 << 20;

struct LookupTable {
  std::string keys = MakeKeys(kLookupKeys, 2);
  std::unique_ptr<kvstore::MemTable> mem = std::make_unique<kvstore::MemTable>(1);
  LookupTable() {
    kvstore::SequenceNumber seq = 1;
    for (size_t i = 0; i < kLookupKeys; i++) {
      mem->Add(seq++, kvstore::ValueType::kValue, KeyAt(keys, i), Value());
    }
  }
};

void BM_MemTableGetHit(benchmark::State& state) {
  static const LookupTable table;
  std::mt19937_64 rng(3);
  std::string value;
  uint64_t misses = 0;
  for (auto _ : state) {
    std::string_view key = KeyAt(table.keys, rng() % kLookupKeys);
    auto r = table.mem->Get(key, kvstore::kMaxSequenceNumber, &value);
    if (r != kvstore::MemTable::Lookup::kFound) misses++;
    benchmark::DoNotOptimize(value.data());
  }
  if (misses != 0) state.SkipWithError("a lookup of an inserted key missed");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MemTableGetHit);

// WAL append of one 120-byte record per call, without sync, to a segment
// in a fresh /tmp directory that is removed afterwards. A new segment every
// kWalRecords keeps the file (and the page cache) small.
constexpr size_t kWalRecordSize = 120;
constexpr int64_t kWalRecords = 256 * 1024;

void BM_WalAddRecord(benchmark::State& state) {
  char dir_template[] = "/tmp/kvstore-micro-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) {
    state.SkipWithError(std::strerror(errno));
    return;
  }
  const std::string dir = dir_template;
  const std::string path = dir + "/000001.log";
  kvstore::Env* env = kvstore::Env::Default();
  std::unique_ptr<kvstore::wal::LogWriter> writer;
  kvstore::Status s = kvstore::wal::LogWriter::Create(env, path, &writer);
  const std::string record(Value() + Value().substr(0, kWalRecordSize - kValueSize));
  int64_t in_segment = 0;
  for (auto _ : state) {
    if (!s.ok()) break;
    if (in_segment == kWalRecords) {
      state.PauseTiming();
      s = writer->Close();
      writer.reset();
      if (s.ok()) s = kvstore::wal::LogWriter::Create(env, path, &writer);
      in_segment = 0;
      state.ResumeTiming();
      if (!s.ok()) break;
    }
    s = writer->AddRecord(record);
    in_segment++;
  }
  if (writer != nullptr && s.ok()) s = writer->Close();
  writer.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (!s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(kWalRecordSize));
}
BENCHMARK(BM_WalAddRecord);

// Encoding a batch: one Put of a 16-byte key and a 100-byte value, and a
// batch of 100 such Puts (what a client that batches would build).
void BM_WriteBatchPut(benchmark::State& state) {
  static const std::string keys = MakeKeys(1024, 4);
  const std::string& value = Value();
  const int64_t entries = state.range(0);
  kvstore::WriteBatch batch;
  size_t k = 0;
  for (auto _ : state) {
    batch.Clear();
    for (int64_t i = 0; i < entries; i++) batch.Put(KeyAt(keys, k++ & 1023), value);
    benchmark::DoNotOptimize(batch.ByteSize());
  }
  state.SetItemsProcessed(state.iterations() * entries);
  state.SetBytesProcessed(state.iterations() * entries *
                          static_cast<int64_t>(kKeySize + kValueSize));
}
BENCHMARK(BM_WriteBatchPut)->Arg(1)->Arg(100);

}  // namespace

BENCHMARK_MAIN();
