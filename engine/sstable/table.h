// Table: an open SSTable. The index and the filter stay in memory for the
// table's lifetime (their bytes are reported by MemoryUsage); data blocks
// go through the shared block cache.
//
// Thread safety: Get and NewIterator may be called concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "engine/coding/internal_key.h"
#include "engine/sstable/block_cache.h"
#include "engine/sstable/format.h"
#include "engine/sstable/table_builder.h"
#include "kvstore/env.h"

namespace kvstore::sstable {

class Table {
 public:
  // cache may be null (every read goes to the file).
  static Status Open(std::unique_ptr<RandomAccessFile> file, uint64_t file_size, std::string file_name,
                     BlockCache* cache, std::unique_ptr<Table>* table);

  enum class Lookup { kFound, kDeleted, kAbsent };
  // The newest entry for the user key of lookup_key (an internal key at the
  // reader's sequence) with a sequence at or below it.
  // *found_seq (when not null) receives the entry's sequence.
  Status Get(std::string_view lookup_key, Lookup* result, std::string* value,
             uint64_t* found_seq = nullptr) const;
  // False when the filter rules the user key out.
  bool MayContain(std::string_view user_key) const;

  std::unique_ptr<InternalIterator> NewIterator() const;

  // For repair: calls fn with every entry (in order) of every data block
  // that reads back intact. A damaged block is skipped, counted in
  // *bad_blocks, and reading goes on at the next index entry, where an
  // iterator would have to stop. Not OK only when the index itself turns
  // out damaged part way; the entries before that have been delivered.
  Status ForEachReadableEntry(const std::function<void(std::string_view key, std::string_view value)>& fn,
                              uint64_t* bad_blocks) const;

  const TableProperties& properties() const { return props_; }
  const std::string& file_name() const { return file_name_; }
  // Index and filter bytes held in memory.
  size_t MemoryUsage() const;

 private:
  class Iter;
  Table() = default;
  Status ReadDataBlock(std::string_view handle_value, std::shared_ptr<const BlockContents>* block) const;

  std::unique_ptr<RandomAccessFile> file_;
  std::string file_name_;
  BlockCache* cache_ = nullptr;
  uint64_t cache_id_ = 0;
  std::shared_ptr<const BlockContents> index_;
  std::shared_ptr<const BlockContents> filter_;
  TableProperties props_;
};

}  // namespace kvstore::sstable
