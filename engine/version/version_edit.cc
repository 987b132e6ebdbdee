#include "engine/version/version_edit.h"

#include "engine/coding/coding.h"
#include "engine/sstable/format.h"

namespace kvstore {

namespace {
// Field tags: part of the manifest format (docs/format/manifest.md).
enum Tag : uint32_t {
  kLogNumber = 1,
  kNextFileNumber = 2,
  kLastSequence = 3,
  kDeletedFile = 4,
  kNewFile = 5,
};
}  // namespace

void VersionEdit::EncodeTo(std::string* dst) const {
  if (log_number) {
    PutVarint32(dst, kLogNumber);
    PutVarint64(dst, *log_number);
  }
  if (next_file_number) {
    PutVarint32(dst, kNextFileNumber);
    PutVarint64(dst, *next_file_number);
  }
  if (last_sequence) {
    PutVarint32(dst, kLastSequence);
    PutVarint64(dst, *last_sequence);
  }
  for (const auto& [level, number] : deleted_files) {
    PutVarint32(dst, kDeletedFile);
    PutVarint32(dst, static_cast<uint32_t>(level));
    PutVarint64(dst, number);
  }
  for (const auto& [level, f] : new_files) {
    PutVarint32(dst, kNewFile);
    PutVarint32(dst, static_cast<uint32_t>(level));
    PutVarint64(dst, f->number);
    PutVarint64(dst, f->file_size);
    PutVarint64(dst, f->entries);
    PutLengthPrefixed(dst, f->smallest);
    PutLengthPrefixed(dst, f->largest);
  }
}

Status VersionEdit::DecodeFrom(std::string_view input) {
  *this = VersionEdit();
  auto bad = [](const char* what) { return Status::Corruption(std::string("version edit: bad ") + what); };
  while (!input.empty()) {
    uint32_t tag, level;
    uint64_t v;
    if (!GetVarint32(&input, &tag)) return bad("tag");
    switch (tag) {
      case kLogNumber:
        if (!GetVarint64(&input, &v)) return bad("log number");
        log_number = v;
        break;
      case kNextFileNumber:
        if (!GetVarint64(&input, &v)) return bad("next file number");
        next_file_number = v;
        break;
      case kLastSequence:
        if (!GetVarint64(&input, &v)) return bad("last sequence");
        last_sequence = v;
        break;
      case kDeletedFile:
        if (!GetVarint32(&input, &level) || level >= kNumLevels || !GetVarint64(&input, &v)) {
          return bad("deleted file");
        }
        DeleteFile(static_cast<int>(level), v);
        break;
      case kNewFile: {
        FileMeta f;
        std::string_view smallest, largest;
        if (!GetVarint32(&input, &level) || level >= kNumLevels || !GetVarint64(&input, &f.number) ||
            !GetVarint64(&input, &f.file_size) || !GetVarint64(&input, &f.entries) ||
            !GetLengthPrefixed(&input, &smallest) || !GetLengthPrefixed(&input, &largest) ||
            smallest.size() < 8 || largest.size() < 8) {
          return bad("new file");
        }
        f.smallest.assign(smallest);
        f.largest.assign(largest);
        AddFile(static_cast<int>(level), std::move(f));
        break;
      }
      default:
        return Status::Corruption("version edit: unknown field tag " + std::to_string(tag));
    }
  }
  return Status::OK();
}

}  // namespace kvstore
