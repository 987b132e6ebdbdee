// SwappableDB: a DB whose underlying store can be replaced while it is in
// use. A follower that installs a snapshot opens the snapshot's store in a
// new directory and swaps it in; the request handler keeps its one DB*
// throughout. Every call goes to the store current at the call; iterators
// and snapshots keep the store they came from open until they are released,
// so a swap never pulls a store out from under a reader.
//
// Thread safety: as DB; Swap may be called from any thread.
#pragma once

#include <memory>
#include <mutex>

#include "kvstore/db.h"

namespace kvstore::cluster {

class SwappableDB final : public DB {
 public:
  explicit SwappableDB(std::shared_ptr<DB> db) : db_(std::move(db)) {}

  std::shared_ptr<DB> current() const {
    std::lock_guard lock(mu_);
    return db_;
  }
  // Later calls go to next; the previous store closes (its deleter runs)
  // once the last call, iterator or snapshot using it is done.
  void Swap(std::shared_ptr<DB> next) {
    std::shared_ptr<DB> old;
    std::lock_guard lock(mu_);
    old = std::move(db_);
    db_ = std::move(next);
  }

  Status Put(const WriteOptions& o, std::string_view key, std::string_view value) override {
    return current()->Put(o, key, value);
  }
  Status Delete(const WriteOptions& o, std::string_view key) override {
    return current()->Delete(o, key);
  }
  Status Write(const WriteOptions& o, WriteBatch* batch) override { return current()->Write(o, batch); }
  void WriteAsync(const WriteOptions& o, WriteBatch batch, WriteCallback callback) override {
    std::shared_ptr<DB> db = current();
    DB* raw = db.get();
    // The callback keeps the store open until it has run.
    raw->WriteAsync(o, std::move(batch), [db = std::move(db), cb = std::move(callback)](Status s) mutable {
      cb(s);
    });
  }
  Status Get(const ReadOptions& o, std::string_view key, std::string* value) override;
  std::unique_ptr<Iterator> NewIterator(const ReadOptions& o) override;
  const Snapshot* GetSnapshot() override;
  void ReleaseSnapshot(const Snapshot* snapshot) override;
  Status Flush() override { return current()->Flush(); }
  Status CompactRange(std::string_view begin, std::string_view end) override {
    return current()->CompactRange(begin, end);
  }
  Status Checkpoint(const std::string& dir) override { return current()->Checkpoint(dir); }
  Status SearchByValue(std::string_view value, const ValueSearchOptions& o, std::vector<SearchHit>* hits) override;
  Status FullTextSearch(std::string_view query, const FullTextOptions& o, std::vector<SearchHit>* hits) override;
  Status SemanticSearch(std::string_view text, const SemanticOptions& o, std::vector<SearchHit>* hits) override;
  Status SemanticSearchByVector(const std::vector<float>& vector, const SemanticOptions& o,
                                std::vector<SearchHit>* hits) override;
  DBStats GetStats() override { return current()->GetStats(); }
  bool GetProperty(std::string_view name, std::string* value) override {
    return current()->GetProperty(name, value);
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<DB> db_;  // guarded by mu_
};

}  // namespace kvstore::cluster
