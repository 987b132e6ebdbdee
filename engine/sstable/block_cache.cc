#include "engine/sstable/block_cache.h"

namespace kvstore::sstable {

namespace {
// What an entry costs against the budget beyond its bytes.
constexpr size_t kEntryOverhead = 96;
}  // namespace

BlockCache::BlockCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}

std::shared_ptr<const BlockContents> BlockCache::Lookup(uint64_t id, uint64_t offset) {
  Key k{id, offset};
  Shard& s = ShardFor(k);
  std::lock_guard lock(s.mu);
  auto it = s.index.find(k);
  if (it == s.index.end()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  hits_.fetch_add(1, std::memory_order_relaxed);
  return it->second->block;
}

void BlockCache::Insert(uint64_t id, uint64_t offset, std::shared_ptr<const BlockContents> block) {
  Key k{id, offset};
  const size_t charge = block->data.size() + kEntryOverhead;
  const size_t shard_capacity = capacity_ / kShards;
  if (charge > shard_capacity) return;  // would evict everything for one block
  Shard& s = ShardFor(k);
  std::lock_guard lock(s.mu);
  if (auto it = s.index.find(k); it != s.index.end()) {
    s.usage -= it->second->charge;
    s.lru.erase(it->second);
    s.index.erase(it);
  }
  s.lru.push_front(Entry{k, std::move(block), charge});
  s.index.emplace(k, s.lru.begin());
  s.usage += charge;
  while (s.usage > shard_capacity && !s.lru.empty()) {
    Entry& victim = s.lru.back();
    s.usage -= victim.charge;
    s.index.erase(victim.key);
    s.lru.pop_back();
  }
}

size_t BlockCache::usage() const {
  size_t total = 0;
  for (const Shard& s : shards_) {
    std::lock_guard lock(const_cast<std::mutex&>(s.mu));
    total += s.usage;
  }
  return total;
}

}  // namespace kvstore::sstable
