// TableBuilder writes an SSTable (docs/format/sstable.md) from internal keys
// given in increasing order: data blocks as they fill, then the filter, the
// index, the properties and the footer.
//
// Not thread-safe. The caller syncs and closes the file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/sstable/block_builder.h"
#include "engine/sstable/bloom.h"
#include "engine/sstable/format.h"
#include "kvstore/env.h"
#include "kvstore/status.h"

namespace kvstore::sstable {

struct TableOptions {
  size_t block_size = 4096;  // uncompressed bytes per data block, about
  int restart_interval = 16;
  int bloom_bits_per_key = 10;  // 0: no filter
  Compression compression = Compression::kLZ4;
};

// Facts about a table, stored in it and recorded in the manifest.
struct TableProperties {
  uint64_t entries = 0;
  uint64_t deletions = 0;
  uint64_t data_blocks = 0;
  uint64_t raw_key_bytes = 0;
  uint64_t raw_value_bytes = 0;
  std::string smallest;  // internal keys
  std::string largest;

  void EncodeTo(std::string* dst) const;
  bool DecodeFrom(std::string_view input);
};

class TableBuilder {
 public:
  TableBuilder(const TableOptions& options, WritableFile* file);

  // key is an internal key, greater than every key added before.
  void Add(std::string_view key, std::string_view value);
  // Writes the rest of the table. Status of the first failed write, if any.
  Status Finish();

  const TableProperties& properties() const { return props_; }
  uint64_t FileSize() const { return offset_; }
  const Status& status() const { return status_; }

 private:
  void FlushDataBlock();
  BlockHandle WriteBlock(std::string_view raw, Compression compression);

  const TableOptions options_;
  WritableFile* const file_;
  Status status_;
  uint64_t offset_ = 0;
  BlockBuilder data_;
  BlockBuilder index_{1};  // every index entry is a restart point: binary search over all
  BloomBuilder bloom_;
  TableProperties props_;
  std::string scratch_;
};

}  // namespace kvstore::sstable
