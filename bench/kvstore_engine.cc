// The kvstore adapter: the public API only (kvstore/db.h), as an embedder
// would use it.
#include <cstdio>
#include <memory>

#include "bench/bench_engine.h"
#include "kvstore/db.h"

namespace kvbench {
namespace {

BenchStatus FromStatus(const kvstore::Status& s) {
  return s.ok() ? BenchStatus::OK() : BenchStatus::Error(s.ToString());
}

class KvstoreIterator final : public BenchIterator {
 public:
  explicit KvstoreIterator(std::unique_ptr<kvstore::Iterator> it) : it_(std::move(it)) {}
  void SeekToFirst() override { it_->SeekToFirst(); }
  bool Valid() const override { return it_->Valid(); }
  void Next() override { it_->Next(); }
  std::string_view key() const override { return it_->key(); }
  std::string_view value() const override { return it_->value(); }
  BenchStatus status() const override { return FromStatus(it_->status()); }

 private:
  std::unique_ptr<kvstore::Iterator> it_;
};

class KvstoreEngine final : public BenchEngine {
 public:
  const char* name() const override { return "kvstore"; }

  BenchStatus Open(const EngineConfig& config) override {
    kvstore::Options options;
    options.create_if_missing = true;
    options.memtable_budget = config.write_buffer_size;
    options.block_cache_bytes = config.block_cache_bytes;
    options.bloom_bits_per_key = config.bloom_bits_per_key;
    options.compression = config.compression;
    write_options_.sync = config.sync;
    return FromStatus(kvstore::DB::Open(options, config.dir, &db_));
  }

  BenchStatus Put(int, std::string_view key, std::string_view value) override {
    return FromStatus(db_->Put(write_options_, key, value));
  }

  BenchStatus Get(int, std::string_view key, std::string* value, bool* found) override {
    kvstore::Status s = db_->Get(kvstore::ReadOptions{}, key, value);
    *found = s.ok();
    return s.ok() || s.IsNotFound() ? BenchStatus::OK() : FromStatus(s);
  }

  std::unique_ptr<BenchIterator> NewIterator(int) override {
    return std::make_unique<KvstoreIterator>(db_->NewIterator(kvstore::ReadOptions{}));
  }

  BenchStatus CompactAll() override { return FromStatus(db_->CompactRange("", "")); }

  BenchStatus Close() override {
    if (db_ != nullptr) {
      // How well group commit grouped: on stderr, so --json output stays clean.
      kvstore::DBStats st = db_->GetStats();
      std::fprintf(stderr,
                   "# kvstore: %lu writes in %lu WAL appends with %lu fdatasyncs; %lu stalls, "
                   "longest %lu us\n",
                   static_cast<unsigned long>(st.writes), static_cast<unsigned long>(st.write_groups),
                   static_cast<unsigned long>(st.wal_syncs), static_cast<unsigned long>(st.stall_count),
                   static_cast<unsigned long>(st.max_stall_micros));
    }
    db_.reset();  // waits for writes in flight, releases the LOCK
    return BenchStatus::OK();
  }

 private:
  std::unique_ptr<kvstore::DB> db_;
  kvstore::WriteOptions write_options_;
};

}  // namespace

std::unique_ptr<BenchEngine> NewKvstoreEngine() { return std::make_unique<KvstoreEngine>(); }

}  // namespace kvbench
