// BlockBuilder: keys in order, prefix-compressed against the previous key,
// with a full key (a restart point) every restart_interval entries so that a
// reader can binary-search the block. Layout in docs/format/sstable.md:
//   entry*  restart_offset fixed32 * num_restarts  num_restarts fixed32
//   entry := varint32 shared | varint32 unshared | varint32 value_size | key[shared:] | value
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvstore::sstable {

class BlockBuilder {
 public:
  explicit BlockBuilder(int restart_interval = 16) : restart_interval_(restart_interval) { Reset(); }

  void Reset();
  // key must sort after every key added since Reset.
  void Add(std::string_view key, std::string_view value);
  // The finished block; valid until Reset.
  std::string_view Finish();

  // Size of the block if finished now.
  size_t EstimatedSize() const { return buffer_.size() + restarts_.size() * 4 + 4; }
  bool empty() const { return buffer_.empty(); }
  std::string_view last_key() const { return last_key_; }

 private:
  const int restart_interval_;
  std::string buffer_;
  std::vector<uint32_t> restarts_;
  int counter_ = 0;
  bool finished_ = false;
  std::string last_key_;
};

}  // namespace kvstore::sstable
