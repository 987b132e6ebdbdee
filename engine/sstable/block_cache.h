// BlockCache: a sharded LRU of decoded blocks with a byte budget. Blocks are
// shared_ptrs, so an entry evicted while an iterator reads it stays alive
// until the iterator lets go.
//
// Thread safety: all methods may be called concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

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
  // An entry is linked into its shard's LRU list through prev/next and
  // found through the shard's index: one allocation per insert, none per
  // hit.
  struct Entry {
    Key key;
    std::shared_ptr<const BlockContents> block;
    size_t charge = 0;
    Entry* prev = nullptr;  // towards the most recently used
    Entry* next = nullptr;  // towards the least recently used
  };
  // Open addressing with linear probing, keys inline: a lookup reads one
  // slot (a cache line) where std::unordered_map read a bucket and then a
  // node, and readrandom spent a sixth of its time there. Kept at most half
  // full; erase shifts the run back, so there are no tombstones.
  class Index {
   public:
    Entry* Find(const Key& k, size_t hash) const;
    void Insert(Entry* e, size_t hash);  // e->key is not in the index
    void Erase(const Key& k, size_t hash);

   private:
    struct Slot {
      Key key;
      Entry* entry = nullptr;  // nullptr: empty
    };
    // The shard already took the hash's low bits.
    size_t Home(size_t hash) const { return (hash >> 4) & (slots_.size() - 1); }
    void Grow();
    std::vector<Slot> slots_;
    size_t count_ = 0;
  };
  struct Shard {
    mutable Mutex mu;  // mutable: usage() const reads under it
    Index index GUARDED_BY(mu);
    Entry* head GUARDED_BY(mu) = nullptr;  // most recently used
    Entry* tail GUARDED_BY(mu) = nullptr;  // least recently used
    size_t usage GUARDED_BY(mu) = 0;

    ~Shard();
    void Unlink(Entry* e) REQUIRES(mu);
    void PushFront(Entry* e) REQUIRES(mu);
  };
  static_assert(kShards == 16, "Index::Home skips the 4 bits that pick the shard");

  const size_t capacity_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> hits_{0}, misses_{0};
  Shard shards_[kShards];
};

}  // namespace kvstore::sstable
