#include "engine/sstable/block_cache.h"

namespace kvstore::sstable {

namespace {
// What an entry costs against the budget beyond its bytes.
constexpr size_t kEntryOverhead = 96;
}  // namespace

BlockCache::BlockCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}

void BlockCache::Shard::Unlink(Entry* e) {
  (e->prev != nullptr ? e->prev->next : head) = e->next;
  (e->next != nullptr ? e->next->prev : tail) = e->prev;
  e->prev = e->next = nullptr;
}

void BlockCache::Shard::PushFront(Entry* e) {
  e->prev = nullptr;
  e->next = head;
  (head != nullptr ? head->prev : tail) = e;
  head = e;
}

std::shared_ptr<const BlockContents> BlockCache::Lookup(uint64_t id, uint64_t offset) {
  Key k{id, offset};
  Shard& s = ShardFor(k);
  MutexLock lock(&s.mu);
  auto it = s.index.find(k);
  if (it == s.index.end()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  Entry* e = &it->second;
  if (s.head != e) {
    s.Unlink(e);
    s.PushFront(e);
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  return e->block;
}

void BlockCache::Insert(uint64_t id, uint64_t offset, std::shared_ptr<const BlockContents> block) {
  Key k{id, offset};
  const size_t charge = block->data.size() + kEntryOverhead;
  const size_t shard_capacity = capacity_ / kShards;
  if (charge > shard_capacity) return;  // would evict everything for one block
  Shard& s = ShardFor(k);
  MutexLock lock(&s.mu);
  auto [it, inserted] = s.index.try_emplace(k);
  Entry* e = &it->second;
  if (!inserted) {
    s.usage -= e->charge;
    s.Unlink(e);
  }
  e->key = k;
  e->block = std::move(block);
  e->charge = charge;
  s.PushFront(e);
  s.usage += charge;
  while (s.usage > shard_capacity && s.tail != nullptr && s.tail != e) {
    Entry* victim = s.tail;
    s.usage -= victim->charge;
    s.Unlink(victim);
    s.index.erase(victim->key);
  }
}

size_t BlockCache::usage() const {
  size_t total = 0;
  for (const Shard& s : shards_) {
    MutexLock lock(&s.mu);
    total += s.usage;
  }
  return total;
}

}  // namespace kvstore::sstable
