#include "engine/sstable/format.h"

#include <lz4.h>

#include <cstring>

#include "engine/coding/checksum.h"
#include "engine/coding/coding.h"

namespace kvstore::sstable {

void BlockHandle::EncodeTo(std::string* dst) const {
  PutVarint64(dst, offset);
  PutVarint64(dst, size);
}

bool BlockHandle::DecodeFrom(std::string_view* input) {
  return GetVarint64(input, &offset) && GetVarint64(input, &size);
}

void Footer::EncodeTo(std::string* dst) const {
  const size_t start = dst->size();
  for (const BlockHandle* h : {&index, &filter, &properties}) {
    PutFixed64(dst, h->offset);
    PutFixed64(dst, h->size);
  }
  PutFixed32(dst, kFormatVersion);
  PutFixed32(dst, Checksum32(std::string_view(*dst).substr(start, 52)));
  PutFixed64(dst, kMagic);
}

Status Footer::DecodeFrom(std::string_view input, const std::string& file) {
  if (input.size() != kFooterSize) return Status::Corruption(file + ": file too short for a table footer");
  if (DecodeFixed64(input.data() + 56) != kMagic) {
    return Status::Corruption(file + ": not a kvstore table (bad magic number)");
  }
  if (!ChecksumMatches(DecodeFixed32(input.data() + 52), Checksum32(input.substr(0, 52)))) {
    return Status::Corruption(file + ": table footer checksum mismatch");
  }
  uint32_t version = DecodeFixed32(input.data() + 48);
  if (version != kFormatVersion) {
    return Status::NotSupported(file + ": table format version " + std::to_string(version) +
                                " is not supported (this build reads version " +
                                std::to_string(kFormatVersion) + ")");
  }
  const char* p = input.data();
  for (BlockHandle* h : {&index, &filter, &properties}) {
    h->offset = DecodeFixed64(p);
    h->size = DecodeFixed64(p + 8);
    p += 16;
  }
  return Status::OK();
}

BlockHandle AppendBlock(std::string_view raw, Compression preferred, uint64_t offset, std::string* dst) {
  Compression type = Compression::kNone;
  std::string_view stored = raw;
  std::string compressed;
  if (preferred == Compression::kLZ4 && raw.size() >= 64 &&
      raw.size() <= static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
    const int bound = LZ4_compressBound(static_cast<int>(raw.size()));
    PutVarint32(&compressed, static_cast<uint32_t>(raw.size()));
    const size_t header = compressed.size();
    compressed.resize(header + static_cast<size_t>(bound));
    int n = LZ4_compress_default(raw.data(), compressed.data() + header, static_cast<int>(raw.size()), bound);
    // Keep the compressed form only when it saves at least an eighth.
    if (n > 0 && header + static_cast<size_t>(n) < raw.size() - raw.size() / 8) {
      compressed.resize(header + static_cast<size_t>(n));
      stored = compressed;
      type = Compression::kLZ4;
    }
  }
  BlockHandle handle{offset, stored.size()};
  dst->append(stored);
  char trailer[kBlockTrailerSize];
  trailer[0] = static_cast<char>(type);
  EncodeFixed32(trailer + 1, Checksum32(stored, static_cast<uint64_t>(type)));
  dst->append(trailer, kBlockTrailerSize);
  return handle;
}

void BlockContents::Assign(std::string_view bytes) {
  Allocate(bytes.size());
  if (!bytes.empty()) std::memcpy(buffer.get(), bytes.data(), bytes.size());
}

Status ReadBlock(const RandomAccessFile& file, const std::string& file_name, const BlockHandle& handle,
                 std::shared_ptr<const BlockContents>* result) {
  auto where = [&] { return file_name + ": block at offset " + std::to_string(handle.offset); };
  if (handle.size > (uint64_t{1} << 31)) return Status::Corruption(where() + ": implausible block size");
  const size_t n = static_cast<size_t>(handle.size) + kBlockTrailerSize;
  auto contents = std::make_shared<BlockContents>();
  std::unique_ptr<char[]> buf(new char[n]);
  std::string_view got;
  Status s = file.Read(handle.offset, n, &got, buf.get());
  if (!s.ok()) return s;
  if (got.size() != n) return Status::Corruption(where() + ": truncated");
  std::string_view stored = got.substr(0, static_cast<size_t>(handle.size));
  const uint8_t type = static_cast<uint8_t>(got[handle.size]);
  if (!ChecksumMatches(DecodeFixed32(got.data() + handle.size + 1), Checksum32(stored, type))) {
    return Status::Corruption(where() + ": checksum mismatch");
  }
  if (type == static_cast<uint8_t>(Compression::kNone)) {
    if (got.data() == buf.get()) {
      contents->buffer = std::move(buf);  // the trailer stays behind, unused
      contents->data = std::string_view(contents->buffer.get(), static_cast<size_t>(handle.size));
    } else {
      contents->Assign(stored);
    }
  } else if (type == static_cast<uint8_t>(Compression::kLZ4)) {
    uint32_t raw_size = 0;
    std::string_view input = stored;
    if (!GetVarint32(&input, &raw_size) || raw_size > (1u << 30)) {
      return Status::Corruption(where() + ": bad compressed block header");
    }
    contents->Allocate(raw_size);
    int r = LZ4_decompress_safe(input.data(), contents->buffer.get(), static_cast<int>(input.size()),
                                static_cast<int>(raw_size));
    if (r < 0 || static_cast<uint32_t>(r) != raw_size) {
      return Status::Corruption(where() + ": LZ4 data does not decompress");
    }
  } else {
    return Status::Corruption(where() + ": unknown compression type " + std::to_string(type));
  }
  *result = std::move(contents);
  return Status::OK();
}

}  // namespace kvstore::sstable
