// SSTable format constants and the pieces every part of the table code
// shares: block handles, the footer, and reading a block back (checksum,
// decompression). The format is specified in docs/format/sstable.md:
// changing a constant here changes the format.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "kvstore/env.h"
#include "kvstore/status.h"

namespace kvstore::sstable {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint64_t kMagic = 0x315453535453564bull;  // the bytes "KVSTSST1", little-endian
inline constexpr size_t kFooterSize = 64;
// Every block is followed by: compression type (1) | checksum32 (4).
inline constexpr size_t kBlockTrailerSize = 5;

enum class Compression : uint8_t { kNone = 0, kLZ4 = 1 };

// Where a block lives: its offset and size, the trailer not included.
struct BlockHandle {
  uint64_t offset = 0;
  uint64_t size = 0;

  void EncodeTo(std::string* dst) const;  // varint64 offset | varint64 size
  bool DecodeFrom(std::string_view* input);
};

struct Footer {
  BlockHandle index;
  BlockHandle filter;      // size 0: no filter
  BlockHandle properties;

  void EncodeTo(std::string* dst) const;  // exactly kFooterSize bytes
  Status DecodeFrom(std::string_view input, const std::string& file);
};

// Compresses raw with LZ4 when that saves at least an eighth, and appends
// the stored bytes and the trailer to *dst. Returns the handle of the block.
BlockHandle AppendBlock(std::string_view raw, Compression preferred, uint64_t offset, std::string* dst);

// The decoded contents of a block, shared with the block cache. The bytes
// live in an uninitialized buffer: a std::string would zero every block
// before the read or the decompression overwrites it.
struct BlockContents {
  BlockContents() = default;
  explicit BlockContents(std::string_view bytes) { Assign(bytes); }
  void Allocate(size_t n) {
    buffer.reset(new char[n]);
    data = std::string_view(buffer.get(), n);
  }
  void Assign(std::string_view bytes);
  std::unique_ptr<char[]> buffer;
  std::string_view data;
};

// Reads the block at handle, checks its checksum and decompresses it.
Status ReadBlock(const RandomAccessFile& file, const std::string& file_name, const BlockHandle& handle,
                 std::shared_ptr<const BlockContents>* result);

}  // namespace kvstore::sstable
