// The RocksDB adapter, compiled only when CMake found RocksDB.
//
// Settings: RocksDB's defaults except what kvbench sets alike for every
// engine: write_buffer_size (kvstore's memtable budget), block size, bloom
// bits per key, block cache bytes, LZ4 compression, and WriteOptions::sync.
#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/cache.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>

#include <memory>

#include "bench/bench_engine.h"

namespace kvbench {
namespace {

BenchStatus FromStatus(const rocksdb::Status& s) {
  return s.ok() ? BenchStatus::OK() : BenchStatus::Error(s.ToString());
}

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
std::string_view ToView(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

class RocksdbIterator final : public BenchIterator {
 public:
  explicit RocksdbIterator(rocksdb::Iterator* it) : it_(it) {}
  void SeekToFirst() override { it_->SeekToFirst(); }
  bool Valid() const override { return it_->Valid(); }
  void Next() override { it_->Next(); }
  std::string_view key() const override { return ToView(it_->key()); }
  std::string_view value() const override { return ToView(it_->value()); }
  BenchStatus status() const override { return FromStatus(it_->status()); }

 private:
  std::unique_ptr<rocksdb::Iterator> it_;
};

class RocksdbEngine final : public BenchEngine {
 public:
  ~RocksdbEngine() override { (void)Close(); }

  const char* name() const override { return "rocksdb"; }

  BenchStatus Open(const EngineConfig& config) override {
    rocksdb::Options options;
    options.create_if_missing = true;
    options.write_buffer_size = config.write_buffer_size;
    options.compression = config.compression ? rocksdb::kLZ4Compression : rocksdb::kNoCompression;
    rocksdb::BlockBasedTableOptions table;
    table.block_size = config.block_size;
    if (config.bloom_bits_per_key > 0) {
      table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(config.bloom_bits_per_key));
    }
    table.block_cache = rocksdb::NewLRUCache(config.block_cache_bytes);
    options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    write_options_.sync = config.sync;
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(options, config.dir, &db);
    db_.reset(db);
    return FromStatus(s);
  }

  BenchStatus Put(int, std::string_view key, std::string_view value) override {
    return FromStatus(db_->Put(write_options_, ToSlice(key), ToSlice(value)));
  }

  BenchStatus Get(int, std::string_view key, std::string* value, bool* found) override {
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), ToSlice(key), value);
    *found = s.ok();
    return s.ok() || s.IsNotFound() ? BenchStatus::OK() : FromStatus(s);
  }

  std::unique_ptr<BenchIterator> NewIterator(int) override {
    return std::make_unique<RocksdbIterator>(db_->NewIterator(rocksdb::ReadOptions()));
  }

  BenchStatus CompactAll() override {
    return FromStatus(db_->CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr));
  }

  BenchStatus Close() override {
    if (db_ == nullptr) return BenchStatus::OK();
    rocksdb::Status s = db_->Close();
    db_.reset();
    return FromStatus(s);
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::WriteOptions write_options_;
};

}  // namespace

std::unique_ptr<BenchEngine> NewRocksdbEngine() { return std::make_unique<RocksdbEngine>(); }

}  // namespace kvbench
