#include "engine/wal/log_writer.h"

#include <algorithm>
#include <cstring>

#include "engine/coding/checksum.h"
#include "engine/coding/coding.h"
#include "engine/wal/log_format.h"

namespace kvstore::wal {

Status LogWriter::Create(Env* env, const std::string& path, const Options& options,
                         std::unique_ptr<LogWriter>* writer) {
  std::unique_ptr<WritableFile> file;
  Status s = env->NewWritableFile(path, &file);
  if (!s.ok()) return s;
  char header[kFileHeaderSize];
  std::copy(kMagic.begin(), kMagic.end(), header);
  EncodeFixed32(header + 8, options.sync_marks ? kFormatVersion : kVersionWithoutSyncMarks);
  EncodeFixed32(header + 12, Checksum32(std::string_view(header, 12)));
  s = file->Append(std::string_view(header, kFileHeaderSize));
  std::unique_ptr<LogWriter> w;
  if (s.ok()) {
    w.reset(new LogWriter(path, std::move(file), kFileHeaderSize, options));
    // The first zeros go out with the header's sync, off the path of the
    // first write.
    w->WriteZerosAhead();
    s = w->file_->Sync();
  }
  if (!s.ok()) {
    if (w != nullptr) (void)w->file_->Close();
    if (file != nullptr) (void)file->Close();
    (void)env->RemoveFile(path);
    return s;
  }
  *writer = std::move(w);
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

void LogWriter::EncodeSyncMark(uint64_t* offset) {
  size_t room = kBlockSize - (*offset - kFileHeaderSize) % kBlockSize;
  if (room < kHeaderSize) {
    buffer_.append(room, '\0');  // trailer: too small for a header
    *offset += room;
  } else if (room < kHeaderSize + kSyncMarkSize) {
    // Zeros here would read as damage: fill the block with a short mark,
    // which carries nothing, and put the real one in the next block.
    static constexpr char kNothing[kSyncMarkSize] = {};
    EmitPhysical(kSyncMarkType, kNothing, room - kHeaderSize);
    *offset += room;
  }
  char payload[kSyncMarkSize];
  EncodeFixed64(payload, synced_size_);
  EmitPhysical(kSyncMarkType, payload, kSyncMarkSize);
  *offset += kHeaderSize + kSyncMarkSize;
}

void LogWriter::WriteZerosAhead() {
  // Topped up a quarter before they run out, so that a group seldom has to
  // grow the file itself; the group that tops them up pays for the new size
  // in its fdatasync, the next ones do not.
  if (options_.prefill_bytes == 0 || zeros_end_ >= size_ + options_.prefill_bytes / 4) return;
  const uint64_t from = std::max(size_, zeros_end_);
  const uint64_t to = size_ + options_.prefill_bytes;
  // A failure (a full disk) costs only the speed-up; the zeros that did get
  // written are cut off with the rest in Finish or Close.
  (void)file_->WriteZeros(from, to - from);
  zeros_end_ = to;
}

Status LogWriter::TrimZeros() {
  if (zeros_end_ <= size_) return Status::OK();
  map_ = nullptr;  // Truncate unmaps it
  map_begin_ = map_end_ = 0;
  Status s = file_->Truncate(size_);
  if (s.ok()) zeros_end_ = size_;
  return s;
}

Status LogWriter::StoreMapped() {
  // Mapped a window at a time: each window grows the file by its size
  // (blocks allocated, not written) and costs one mmap; the page faults
  // that follow cost far less than a pwrite per group.
  constexpr uint64_t kWindow = 1 << 20;
  const uint64_t end = size_ + buffer_.size();
  if (map_ == nullptr || end > map_end_) {
    const uint64_t length = std::max<uint64_t>(kWindow, buffer_.size());
    // Even a MapForWrite that fails may have grown the file: cut that off
    // too when the segment is finished.
    zeros_end_ = std::max(zeros_end_, size_ + length);
    char* p = nullptr;
    Status s = file_->MapForWrite(size_, length, &p);
    if (!s.ok()) {
      map_ = nullptr;
      return s;
    }
    map_ = p;
    map_begin_ = size_;
    map_end_ = size_ + length;
  }
  // The kernel has the bytes once the copy is done. A process killed during
  // it may leave any part of this group, never of an earlier one: recovery
  // sees damage where the group begins, a torn tail.
  std::memcpy(map_ + (size_ - map_begin_), buffer_.data(), buffer_.size());
  return Status::OK();
}

Status LogWriter::AddRecords(std::span<const std::string_view> records, bool will_sync) {
  if (!healthy_) return Status::IOError(path_ + ": WAL segment unusable after an earlier error");
  buffer_.clear();
  uint64_t offset = size_;
  if (options_.sync_marks && synced_size_ != marked_size_) EncodeSyncMark(&offset);
  for (std::string_view r : records) EncodeRecord(r, &offset);
  if (options_.map_unsynced && !map_unsupported_ && (mapped_ || !will_sync)) {
    Status s = StoreMapped();
    if (s.ok()) {
      mapped_ = true;
      size_ = offset;
      marked_size_ = synced_size_;
      if (buffer_.capacity() > (4u << 20)) std::string().swap(buffer_);
      return s;
    }
    // Nothing was stored. Before the first mapped group the file's append
    // position is still right: append instead, for the rest of the
    // segment. After it the group fails (a full disk may pass).
    if (mapped_) return s;
    map_unsupported_ = true;
  }
  Status s = file_->Append(buffer_);
  if (s.ok()) {
    size_ = offset;
    marked_size_ = synced_size_;
    // Only for a segment that is being synced: zeros ahead make fdatasync
    // cheaper and are pure extra writing for a store that never syncs.
    if (synced_records_) WriteZerosAhead();
  } else if (file_->Truncate(size_).ok()) {
    zeros_end_ = size_;
  } else {
    // The tail now holds an unknown prefix of the group; only recovery can
    // sort that out.
    healthy_ = false;
  }
  if (buffer_.capacity() > (4u << 20)) std::string().swap(buffer_);  // don't pin a huge batch's buffer
  return s;
}

Status LogWriter::Sync() {
  if (!healthy_) return Status::IOError(path_ + ": WAL segment unusable after an earlier error");
  Status s = file_->Sync();
  if (s.ok()) {
    synced_size_ = size_;
    synced_records_ = true;
  }
  return s;
}

Status LogWriter::Finish() {
  if (!healthy_) return Status::IOError(path_ + ": WAL segment unusable after an earlier error");
  Status s = TrimZeros();
  if (!s.ok()) return s;
  return Sync();
}

Status LogWriter::Close() {
  if (healthy_) (void)TrimZeros();
  return file_->Close();
}

}  // namespace kvstore::wal
