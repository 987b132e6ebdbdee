// MemTable: the in-memory write buffer, a skiplist of internal keys over an
// arena. Entries are encoded as
//   chain link (8 bytes) | varint32 internal_key_size | user_key | tag fixed64 |
//   varint32 value_size | value
//
// Point lookups go through a hash index beside the skiplist: each bucket
// chains the newest entry of each of its user keys through the entries'
// chain links. A get of a key in a 100k-key memtable then reads one or two
// entries instead of the skiplist's ~17 nodes, each a cache miss; the
// skiplist serves scans, and lookups at a snapshot older than the key's
// newest version.
//
// Thread safety: one writer at a time (the DB's write leader) calls Add;
// Get, iterators and the accessors run concurrently with it, lock-free.
// Shared through std::shared_ptr so that readers and iterators keep it alive
// after it is retired.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "engine/coding/internal_key.h"
#include "engine/memtable/arena.h"
#include "engine/memtable/skiplist.h"

namespace kvstore {

namespace index {
class MemIndex;
}

class MemTable {
 public:
  // wal_number: the first WAL segment holding this memtable's writes.
  // budget: the bytes it may grow to, which sizes its arena blocks so that a
  // small budget is not used up by one block.
  explicit MemTable(uint64_t wal_number, size_t budget = 64 << 20);
  MemTable(const MemTable&) = delete;
  MemTable& operator=(const MemTable&) = delete;

  void Add(SequenceNumber seq, ValueType type, std::string_view key, std::string_view value);

  enum class Lookup { kFound, kDeleted, kAbsent };
  // The newest version of key with sequence <= seq; *found_seq (when not
  // null) receives its sequence.
  Lookup Get(std::string_view key, SequenceNumber seq, std::string* value,
             SequenceNumber* found_seq = nullptr) const;

  std::unique_ptr<InternalIterator> NewIterator() const;

  size_t MemoryUsage() const { return arena_.MemoryUsage(); }
  uint64_t entries() const { return entries_.load(std::memory_order_relaxed); }
  // Keys whose newest version here is a value (not a deletion).
  int64_t live_keys() const { return live_keys_.load(std::memory_order_relaxed); }
  uint64_t wal_number() const { return wal_number_; }

  // The search index of this memtable's entries, when the DB has one. It
  // lives and dies with the memtable, so set it before the memtable is
  // shared; engine/memtable itself never looks at it.
  void set_search_index(std::shared_ptr<index::MemIndex> index) { search_index_ = std::move(index); }
  const std::shared_ptr<index::MemIndex>& search_index() const { return search_index_; }

 private:
  struct KeyComparator {
    int operator()(const char* a, const char* b) const;
  };
  using Table = SkipList<KeyComparator>;
  class Iter;

  using Link = std::atomic<const char*>;
  static Link* LinkOf(const char* entry) { return reinterpret_cast<Link*>(const_cast<char*>(entry)); }
  Link& BucketOf(std::string_view user_key) const;
  // Puts the new entry in its key's bucket's chain, in place of replaced
  // (the key's previous newest entry) when there is one.
  void Chain(Link* bucket, const char* entry, const char* replaced);
  // The newest entry of key with sequence <= seq, through the skiplist.
  const char* FindInSkipList(std::string_view key, SequenceNumber seq) const;

  const uint64_t wal_number_;
  Arena arena_;
  Table table_;
  Link* buckets_;  // in arena_
  size_t bucket_mask_;
  std::string largest_;  // the largest internal key (writer only)
  std::atomic<uint64_t> entries_{0};
  std::atomic<int64_t> live_keys_{0};
  std::shared_ptr<index::MemIndex> search_index_;
};

}  // namespace kvstore
