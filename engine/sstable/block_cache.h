// BlockCache: a sharded LRU of decoded blocks with a byte budget. Blocks are
// shared_ptrs, so an entry evicted while an iterator reads it stays alive
// until the iterator lets go.
//
// Thread safety: all methods may be called concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <unordered_map>

#include "engine/sstable/format.h"
#include "engine/sync/mutex.h"

namespace kvstore::sstable {

class BlockCache {
 public:
  explicit BlockCache(size_t capacity_bytes);
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // A new id for a table opened against this cache: ids never repeat, so a
  // table file reopened later never sees another's stale blocks.
  uint64_t NewId() { return next_id_.fetch_add(1, std::memory_order_relaxed); }

  std::shared_ptr<const BlockContents> Lookup(uint64_t id, uint64_t offset);
  void Insert(uint64_t id, uint64_t offset, std::shared_ptr<const BlockContents> block);

  size_t usage() const;
  size_t capacity() const { return capacity_; }
  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }

 private:
  static constexpr int kShards = 16;
  struct Key {
    uint64_t id, offset;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      // Offsets of one table differ in their middle bits only: mix them all
      // in, or blocks of one table crowd into a few shards and buckets.
      uint64_t h = (k.id * 0x9E3779B97F4A7C15ull) ^ k.offset;
      h ^= h >> 33;
      h *= 0xFF51AFD7ED558CCDull;
      h ^= h >> 33;
      return static_cast<size_t>(h);
    }
  };
  // An entry lives in its shard's map (whose nodes never move) and is
  // linked into the shard's LRU list through prev/next: one allocation per
  // insert, none per hit.
  struct Entry {
    Key key;
    std::shared_ptr<const BlockContents> block;
    size_t charge = 0;
    Entry* prev = nullptr;  // towards the most recently used
    Entry* next = nullptr;  // towards the least recently used
  };
  struct Shard {
    mutable Mutex mu;  // mutable: usage() const reads under it
    std::unordered_map<Key, Entry, KeyHash> index GUARDED_BY(mu);
    Entry* head GUARDED_BY(mu) = nullptr;  // most recently used
    Entry* tail GUARDED_BY(mu) = nullptr;  // least recently used
    size_t usage GUARDED_BY(mu) = 0;

    void Unlink(Entry* e) REQUIRES(mu);
    void PushFront(Entry* e) REQUIRES(mu);
  };
  Shard& ShardFor(const Key& k) { return shards_[KeyHash{}(k) % kShards]; }

  const size_t capacity_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> hits_{0}, misses_{0};
  Shard shards_[kShards];
};

}  // namespace kvstore::sstable
