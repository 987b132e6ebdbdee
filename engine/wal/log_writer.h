// LogWriter appends logical records to one WAL segment.
//
// Not thread-safe: the DB's write leader is its only user.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "kvstore/env.h"
#include "kvstore/status.h"

namespace kvstore::wal {

class LogWriter {
 public:
  // Creates a new segment at path (writes and syncs its header; the caller
  // syncs the directory).
  static Status Create(Env* env, const std::string& path, std::unique_ptr<LogWriter>* writer);

  // Appends the records in one write call. On failure nothing of them stays
  // in the file (the partial write is cut off again) when healthy() still
  // holds afterwards; otherwise the segment's tail is unknown and the writer
  // must not be used again.
  Status AddRecords(std::span<const std::string_view> records);
  Status AddRecord(std::string_view record) { return AddRecords({&record, 1}); }

  // fdatasync of everything appended so far.
  Status Sync();
  // Syncs a segment that is done: call before a newer segment is created,
  // so that only the newest segment can ever end in a torn write, which is
  // what recovery relies on.
  Status Finish();
  Status Close();

  bool healthy() const { return healthy_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  LogWriter(std::string path, std::unique_ptr<WritableFile> file, uint64_t size)
      : path_(std::move(path)), file_(std::move(file)), size_(size) {}
  void EncodeRecord(std::string_view record, uint64_t* offset);
  void EmitPhysical(uint8_t type, const char* data, size_t length);

  const std::string path_;
  std::unique_ptr<WritableFile> file_;
  uint64_t size_;  // bytes durably appended or at least handed to the kernel
  bool healthy_ = true;
  std::string buffer_;  // the encoded group, reused between calls
};

}  // namespace kvstore::wal
