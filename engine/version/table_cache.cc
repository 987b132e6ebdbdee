#include "engine/version/table_cache.h"

#include <cinttypes>
#include <cstdio>

namespace kvstore {

std::string TableFileName(const std::string& dbname, uint64_t number) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "/%06" PRIu64 ".sst", number);
  return dbname + buf;
}

TableCache::TableCache(Env* env, std::string dbname, sstable::BlockCache* block_cache, size_t max_open)
    : env_(env), dbname_(std::move(dbname)), block_cache_(block_cache), max_open_(max_open < 1 ? 1 : max_open) {}

Status TableCache::Find(uint64_t number, uint64_t file_size, std::shared_ptr<const sstable::Table>* table) {
  {
    MutexLock lock(&mu_);
    if (auto it = tables_.find(number); it != tables_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      *table = it->second.table;
      return Status::OK();
    }
  }
  // Open outside the lock: it reads the footer, index and filter.
  const std::string name = TableFileName(dbname_, number);
  std::unique_ptr<RandomAccessFile> file;
  Status s = env_->NewRandomAccessFile(name, &file);
  if (!s.ok()) return s;
  std::unique_ptr<sstable::Table> opened;
  s = sstable::Table::Open(std::move(file), file_size, name, block_cache_, &opened);
  if (!s.ok()) return s;
  std::shared_ptr<const sstable::Table> shared(std::move(opened));
  MutexLock lock(&mu_);
  if (auto it = tables_.find(number); it != tables_.end()) {
    *table = it->second.table;  // another thread opened it meanwhile
    return Status::OK();
  }
  lru_.push_front(number);
  tables_.emplace(number, Entry{shared, lru_.begin()});
  while (tables_.size() > max_open_) {
    tables_.erase(lru_.back());
    lru_.pop_back();
  }
  *table = std::move(shared);
  return Status::OK();
}

void TableCache::Evict(uint64_t number) {
  MutexLock lock(&mu_);
  if (auto it = tables_.find(number); it != tables_.end()) {
    lru_.erase(it->second.lru);
    tables_.erase(it);
  }
}

size_t TableCache::open_tables() {
  MutexLock lock(&mu_);
  return tables_.size();
}

size_t TableCache::MemoryUsage() {
  MutexLock lock(&mu_);
  size_t total = 0;
  for (const auto& [number, e] : tables_) total += e.table->MemoryUsage();
  return total;
}

}  // namespace kvstore
