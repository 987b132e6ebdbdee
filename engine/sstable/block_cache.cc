#include "engine/sstable/block_cache.h"

namespace kvstore::sstable {

namespace {
// What an entry costs against the budget beyond its bytes.
constexpr size_t kEntryOverhead = 96;
}  // namespace

BlockCache::BlockCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}

BlockCache::Entry* BlockCache::Index::Find(const Key& k, size_t hash) const {
  if (slots_.empty()) return nullptr;
  const size_t mask = slots_.size() - 1;
  for (size_t i = Home(hash);; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.entry == nullptr) return nullptr;
    if (s.key == k) return s.entry;
  }
}

void BlockCache::Index::Insert(Entry* e, size_t hash) {
  if (2 * (count_ + 1) > slots_.size()) Grow();
  const size_t mask = slots_.size() - 1;
  size_t i = Home(hash);
  while (slots_[i].entry != nullptr) i = (i + 1) & mask;
  slots_[i] = {e->key, e};
  ++count_;
}

void BlockCache::Index::Erase(const Key& k, size_t hash) {
  if (slots_.empty()) return;
  const size_t mask = slots_.size() - 1;
  size_t i = Home(hash);
  while (slots_[i].entry != nullptr && !(slots_[i].key == k)) i = (i + 1) & mask;
  if (slots_[i].entry == nullptr) return;
  // Backward shift: move later members of the run into the hole when their
  // home is not between the hole and where they sit.
  size_t hole = i;
  for (size_t j = (hole + 1) & mask; slots_[j].entry != nullptr; j = (j + 1) & mask) {
    const size_t home = Home(KeyHash{}(slots_[j].key));
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (!stays) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = Slot{};
  --count_;
}

void BlockCache::Index::Grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? 64 : old.size() * 2, Slot{});
  count_ = 0;
  for (const Slot& s : old) {
    if (s.entry != nullptr) Insert(s.entry, KeyHash{}(s.key));
  }
}

BlockCache::Shard::~Shard() {
  for (Entry* e = head; e != nullptr;) {
    Entry* next = e->next;
    delete e;
    e = next;
  }
}

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
  const Key k{id, offset};
  const size_t hash = KeyHash{}(k);
  Shard& s = shards_[hash % kShards];
  MutexLock lock(&s.mu);
  Entry* e = s.index.Find(k, hash);
  if (e == nullptr) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  if (s.head != e) {
    s.Unlink(e);
    s.PushFront(e);
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  return e->block;
}

void BlockCache::Insert(uint64_t id, uint64_t offset, std::shared_ptr<const BlockContents> block) {
  const Key k{id, offset};
  const size_t hash = KeyHash{}(k);
  const size_t charge = block->data.size() + kEntryOverhead;
  const size_t shard_capacity = capacity_ / kShards;
  if (charge > shard_capacity) return;  // would evict everything for one block
  Shard& s = shards_[hash % kShards];
  MutexLock lock(&s.mu);
  Entry* e = s.index.Find(k, hash);
  if (e != nullptr) {
    s.usage -= e->charge;
    s.Unlink(e);
  } else {
    e = new Entry;
    e->key = k;
    s.index.Insert(e, hash);
  }
  e->block = std::move(block);
  e->charge = charge;
  s.PushFront(e);
  s.usage += charge;
  while (s.usage > shard_capacity && s.tail != nullptr && s.tail != e) {
    Entry* victim = s.tail;
    s.usage -= victim->charge;
    s.Unlink(victim);
    s.index.Erase(victim->key, KeyHash{}(victim->key));
    delete victim;
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
