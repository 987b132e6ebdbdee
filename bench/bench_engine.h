// BenchEngine: the small surface kvbench drives, so that kvstore and its
// peers (RocksDB, LevelDB, a raw append-only file) run the same workload code
// with the same settings. One adapter per engine, each in its own .cc, so a
// peer's headers are compiled once and only when that peer was found.
//
// Thread safety: after Open, Put/Get/NewIterator may be called from the
// benchmark's threads at once; `thread` (0..threads-1) says which one calls.
// Open and Close run on one thread with no operation in flight.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvbench {

// The outcome of an engine call: OK, or an error with a message.
class BenchStatus {
 public:
  BenchStatus() = default;
  static BenchStatus OK() { return BenchStatus(); }
  static BenchStatus Error(std::string message) { return BenchStatus(std::move(message)); }
  bool ok() const { return !error_; }
  const std::string& message() const { return message_; }

 private:
  explicit BenchStatus(std::string message) : error_(true), message_(std::move(message)) {}
  bool error_ = false;
  std::string message_;
};

// Settings every engine gets alike.
struct EngineConfig {
  // The engine's own directory (kvbench gives each engine a subdirectory).
  std::string dir;
  // Durable writes: kvstore::WriteOptions::sync, rocksdb/leveldb
  // WriteOptions::sync, fdatasync after each append for raw.
  bool sync = true;
  // Memtable size: kvstore Options::memtable_budget, rocksdb/leveldb
  // Options::write_buffer_size.
  size_t write_buffer_size = 0;
  // Threads that will call the engine; raw keeps one file per thread.
  int threads = 1;
  // Table settings every engine gets alike (kvstore's defaults).
  size_t block_size = 4096;
  int bloom_bits_per_key = 10;
  size_t block_cache_bytes = 64 << 20;
  // kvstore and RocksDB use LZ4; LevelDB has only Snappy, so it uses that.
  bool compression = true;
};

// An ordered scan of the whole store.
class BenchIterator {
 public:
  virtual ~BenchIterator() = default;
  virtual void SeekToFirst() = 0;
  virtual bool Valid() const = 0;
  virtual void Next() = 0;
  virtual std::string_view key() const = 0;
  virtual std::string_view value() const = 0;
  // Not OK when the scan stopped early because of an error.
  virtual BenchStatus status() const = 0;
};

class BenchEngine {
 public:
  virtual ~BenchEngine() = default;

  virtual const char* name() const = 0;
  // False for engines that only write (raw); kvbench skips read workloads.
  virtual bool SupportsReads() const { return true; }

  // Opens (creating if needed) the store in config.dir. The directory
  // exists; it is empty for a fresh store.
  virtual BenchStatus Open(const EngineConfig& config) = 0;
  virtual BenchStatus Put(int thread, std::string_view key, std::string_view value) = 0;
  // *found is false (and OK is returned) when the key has no value.
  virtual BenchStatus Get(int thread, std::string_view key, std::string* value, bool* found) = 0;
  virtual std::unique_ptr<BenchIterator> NewIterator(int thread) = 0;
  // Compacts the whole key range as far as the engine goes (kvbench's
  // "compact" workload; a no-op for raw).
  virtual BenchStatus CompactAll() = 0;
  // Releases the store (and its directory lock). Safe to call twice.
  virtual BenchStatus Close() = 0;
};

// The engines compiled into this binary, in the order kvbench lists them.
std::vector<std::string> AvailableEngines();
// A known engine name that was not compiled in (e.g. rocksdb without
// librocksdb-dev) gives nullptr and *error explains; so does an unknown one.
std::unique_ptr<BenchEngine> MakeEngine(const std::string& name, std::string* error);

// Factories, one per adapter file.
std::unique_ptr<BenchEngine> NewKvstoreEngine();
std::unique_ptr<BenchEngine> NewRawEngine();
#ifdef KVBENCH_HAVE_ROCKSDB
std::unique_ptr<BenchEngine> NewRocksdbEngine();
#endif
#ifdef KVBENCH_HAVE_LEVELDB
std::unique_ptr<BenchEngine> NewLeveldbEngine();
#endif

}  // namespace kvbench
