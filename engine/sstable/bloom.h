// A cache-local bloom filter over a table's user keys: each key's probes all
// fall in one 64-byte line, so a lookup costs one cache miss. Layout (see
// docs/format/sstable.md):
//   line[num_lines] (64 bytes each) | num_probes uint8 | 0 0 0 | num_lines fixed32
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvstore::sstable {

class BloomBuilder {
 public:
  explicit BloomBuilder(int bits_per_key) : bits_per_key_(bits_per_key) {}
  // Adds a key; consecutive duplicates are skipped.
  void Add(std::string_view user_key);
  // Builds the filter over every key added, and forgets them.
  std::string Finish();
  size_t num_keys() const { return hashes_.size(); }

 private:
  const int bits_per_key_;
  std::vector<uint64_t> hashes_;
};

// False means the key is certainly not in the table. A filter that does not
// parse matches everything (it only ever saves work).
bool BloomMayContain(std::string_view filter, std::string_view user_key);

}  // namespace kvstore::sstable
