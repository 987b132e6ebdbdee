// Block: a decoded data or index block, and an iterator over it. Every
// offset read from the block is bounds-checked, so a damaged block (one that
// passed its checksum by bad luck, or a bug) makes the iterator invalid with
// Status::Corruption instead of reading out of bounds.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "engine/sstable/format.h"
#include "kvstore/status.h"

namespace kvstore::sstable {

// Orders the keys of a block: internal keys in data blocks and index blocks.
using KeyCompare = int (*)(std::string_view, std::string_view);
// Every key in a block is an internal key, so at least its 8-byte tag long;
// a shorter one is damage, and is never handed to the comparator (which
// reads the tag at the key's end).
inline constexpr size_t kMinKeySize = 8;

class BlockIterator {
 public:
  // contents stays alive as long as the iterator (it may come from the cache).
  BlockIterator(std::shared_ptr<const BlockContents> contents, KeyCompare compare);
  // Borrows contents, which the caller keeps alive longer than the
  // iterator: a table's own index block, read on every lookup, without a
  // reference count's atomic increment and decrement each time.
  BlockIterator(const BlockContents* contents, KeyCompare compare);

  bool Valid() const { return current_ < restarts_offset_ && status_.ok(); }
  const Status& status() const { return status_; }
  void SeekToFirst();
  // First entry with key >= target.
  void Seek(std::string_view target);
  void Next();
  std::string_view key() const { return key_view_; }
  std::string_view value() const { return value_; }

 private:
  void Corrupt();
  // Decodes the entry at next_ into key_/value_; false at the end or on damage.
  bool ParseNextEntry();
  uint32_t RestartPoint(uint32_t index) const;
  void SeekToRestart(uint32_t index);

  void Init(const BlockContents& contents);

  std::shared_ptr<const BlockContents> contents_;  // empty when borrowed
  KeyCompare compare_;
  const char* data_ = nullptr;
  uint32_t restarts_offset_ = 0;  // where the restart array begins (end of entries)
  uint32_t num_restarts_ = 0;
  uint32_t current_ = 0;  // offset of the current entry
  uint32_t next_ = 0;     // offset of the entry after it
  // The current key: a view into the block when the entry stores it whole
  // (every restart point, every index entry), so most seeks copy no key;
  // else into key_, where it is rebuilt from the previous key's prefix.
  std::string_view key_view_;
  std::string key_;
  std::string_view value_;
  Status status_;
};

}  // namespace kvstore::sstable
