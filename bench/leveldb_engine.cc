// The LevelDB adapter, compiled only when CMake found LevelDB.
//
// Settings: LevelDB's defaults (Snappy compression when the library has it,
// its own block cache) except write_buffer_size, which is set to kvstore's
// memtable budget, and WriteOptions::sync, which follows --sync. Compression
// differences do not matter much for now; see rocksdb_engine.cc.
#include <leveldb/db.h>
#include <leveldb/iterator.h>
#include <leveldb/cache.h>
#include <leveldb/filter_policy.h>
#include <leveldb/options.h>

#include <memory>

#include "bench/bench_engine.h"

namespace kvbench {
namespace {

BenchStatus FromStatus(const leveldb::Status& s) {
  return s.ok() ? BenchStatus::OK() : BenchStatus::Error(s.ToString());
}

leveldb::Slice ToSlice(std::string_view s) { return leveldb::Slice(s.data(), s.size()); }
std::string_view ToView(const leveldb::Slice& s) { return std::string_view(s.data(), s.size()); }

class LeveldbIterator final : public BenchIterator {
 public:
  explicit LeveldbIterator(leveldb::Iterator* it) : it_(it) {}
  void SeekToFirst() override { it_->SeekToFirst(); }
  bool Valid() const override { return it_->Valid(); }
  void Next() override { it_->Next(); }
  std::string_view key() const override { return ToView(it_->key()); }
  std::string_view value() const override { return ToView(it_->value()); }
  BenchStatus status() const override { return FromStatus(it_->status()); }

 private:
  std::unique_ptr<leveldb::Iterator> it_;
};

class LeveldbEngine final : public BenchEngine {
 public:
  const char* name() const override { return "leveldb"; }

  BenchStatus Open(const EngineConfig& config) override {
    leveldb::Options options;
    options.create_if_missing = true;
    options.write_buffer_size = config.write_buffer_size;
    options.block_size = config.block_size;
    options.compression = config.compression ? leveldb::kSnappyCompression : leveldb::kNoCompression;
    if (config.bloom_bits_per_key > 0) {
      filter_policy_.reset(leveldb::NewBloomFilterPolicy(config.bloom_bits_per_key));
      options.filter_policy = filter_policy_.get();
    }
    block_cache_.reset(leveldb::NewLRUCache(config.block_cache_bytes));
    options.block_cache = block_cache_.get();
    write_options_.sync = config.sync;
    leveldb::DB* db = nullptr;
    leveldb::Status s = leveldb::DB::Open(options, config.dir, &db);
    db_.reset(db);
    return FromStatus(s);
  }

  BenchStatus Put(int, std::string_view key, std::string_view value) override {
    return FromStatus(db_->Put(write_options_, ToSlice(key), ToSlice(value)));
  }

  BenchStatus Get(int, std::string_view key, std::string* value, bool* found) override {
    leveldb::Status s = db_->Get(leveldb::ReadOptions(), ToSlice(key), value);
    *found = s.ok();
    return s.ok() || s.IsNotFound() ? BenchStatus::OK() : FromStatus(s);
  }

  std::unique_ptr<BenchIterator> NewIterator(int) override {
    return std::make_unique<LeveldbIterator>(db_->NewIterator(leveldb::ReadOptions()));
  }

  BenchStatus CompactAll() override {
    db_->CompactRange(nullptr, nullptr);
    return BenchStatus::OK();
  }

  BenchStatus Close() override {
    db_.reset();  // LevelDB closes in its destructor
    return BenchStatus::OK();
  }

 private:
  // Declared before db_: the DB uses them until it is deleted.
  std::unique_ptr<const leveldb::FilterPolicy> filter_policy_;
  std::unique_ptr<leveldb::Cache> block_cache_;
  std::unique_ptr<leveldb::DB> db_;
  leveldb::WriteOptions write_options_;
};

}  // namespace

std::unique_ptr<BenchEngine> NewLeveldbEngine() { return std::make_unique<LeveldbEngine>(); }

}  // namespace kvbench
