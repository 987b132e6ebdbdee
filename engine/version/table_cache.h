// TableCache: open tables by file number, at most max_open at once (least
// recently used closed first), so the number of open files stays bounded.
//
// Thread safety: all methods may be called concurrently. A table handed out
// stays usable after eviction; only its file descriptor's lifetime follows.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "engine/sstable/block_cache.h"
#include "engine/sstable/table.h"
#include "engine/sync/mutex.h"
#include "kvstore/env.h"

namespace kvstore {

std::string TableFileName(const std::string& dbname, uint64_t number);

class TableCache {
 public:
  TableCache(Env* env, std::string dbname, sstable::BlockCache* block_cache, size_t max_open);

  Status Find(uint64_t number, uint64_t file_size, std::shared_ptr<const sstable::Table>* table) EXCLUDES(mu_);
  void Evict(uint64_t number) EXCLUDES(mu_);

  size_t open_tables() EXCLUDES(mu_);
  // Index and filter bytes of the open tables.
  size_t MemoryUsage() EXCLUDES(mu_);

 private:
  struct Entry {
    std::shared_ptr<const sstable::Table> table;
    std::list<uint64_t>::iterator lru;
  };
  Env* const env_;
  const std::string dbname_;
  sstable::BlockCache* const block_cache_;
  const size_t max_open_;
  Mutex mu_;  // held for lookups and bookkeeping, never while a table opens
  std::list<uint64_t> lru_ GUARDED_BY(mu_);  // front = most recent
  std::unordered_map<uint64_t, Entry> tables_ GUARDED_BY(mu_);
};

}  // namespace kvstore
