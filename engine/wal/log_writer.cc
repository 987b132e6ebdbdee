#include "engine/wal/log_writer.h"

#include <algorithm>

#include "engine/coding/checksum.h"
#include "engine/coding/coding.h"
#include "engine/wal/log_format.h"

namespace kvstore::wal {

Status LogWriter::Create(Env* env, const std::string& path, std::unique_ptr<LogWriter>* writer) {
  std::unique_ptr<WritableFile> file;
  Status s = env->NewWritableFile(path, &file);
  if (!s.ok()) return s;
  char header[kFileHeaderSize];
  std::copy(kMagic.begin(), kMagic.end(), header);
  EncodeFixed32(header + 8, kFormatVersion);
  EncodeFixed32(header + 12, Checksum32(std::string_view(header, 12)));
  s = file->Append(std::string_view(header, kFileHeaderSize));
  if (s.ok()) s = file->Sync();
  if (!s.ok()) {
    (void)file->Close();
    (void)env->RemoveFile(path);
    return s;
  }
  writer->reset(new LogWriter(path, std::move(file), kFileHeaderSize));
  return Status::OK();
}

void LogWriter::EmitPhysical(uint8_t type, const char* data, size_t length) {
  char header[kHeaderSize];
  EncodeFixed32(header, Checksum32(std::string_view(data, length),
                                   RecordChecksumSeed(type, static_cast<uint32_t>(length))));
  header[4] = static_cast<char>(length & 0xff);
  header[5] = static_cast<char>(length >> 8);
  header[6] = static_cast<char>(type);
  buffer_.append(header, kHeaderSize);
  buffer_.append(data, length);
}

void LogWriter::EncodeRecord(std::string_view record, uint64_t* offset) {
  const char* p = record.data();
  size_t left = record.size();
  bool begin = true;
  // An empty record is still emitted, as one FULL fragment of length 0.
  do {
    size_t block_offset = (*offset - kFileHeaderSize) % kBlockSize;
    size_t room = kBlockSize - block_offset;
    if (room < kHeaderSize) {
      buffer_.append(room, '\0');  // trailer: too small for a header
      *offset += room;
      room = kBlockSize;
    }
    size_t avail = room - kHeaderSize;
    size_t fragment = std::min(left, avail);
    bool end = fragment == left;
    uint8_t type = begin && end ? kFullType : begin ? kFirstType : end ? kLastType : kMiddleType;
    EmitPhysical(type, p, fragment);
    *offset += kHeaderSize + fragment;
    p += fragment;
    left -= fragment;
    begin = false;
  } while (left > 0);
}

Status LogWriter::AddRecords(std::span<const std::string_view> records) {
  if (!healthy_) return Status::IOError(path_ + ": WAL segment unusable after an earlier error");
  buffer_.clear();
  uint64_t offset = size_;
  for (std::string_view r : records) EncodeRecord(r, &offset);
  Status s = file_->Append(buffer_);
  if (s.ok()) {
    size_ = offset;
  } else if (!file_->Truncate(size_).ok()) {
    // The tail now holds an unknown prefix of the group; only recovery can
    // sort that out.
    healthy_ = false;
  }
  if (buffer_.capacity() > (4u << 20)) std::string().swap(buffer_);  // don't pin a huge batch's buffer
  return s;
}

Status LogWriter::Sync() {
  if (!healthy_) return Status::IOError(path_ + ": WAL segment unusable after an earlier error");
  return file_->Sync();
}

Status LogWriter::Finish() { return Sync(); }

Status LogWriter::Close() { return file_->Close(); }

}  // namespace kvstore::wal
