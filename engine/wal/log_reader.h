// LogReader reads the logical records of one WAL segment back, reporting
// damaged regions instead of stopping at them, so that recovery can tell a
// torn tail (nothing valid after the damage) from corruption in the middle.
//
// Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "engine/wal/log_format.h"
#include "kvstore/env.h"
#include "kvstore/status.h"

namespace kvstore::wal {

class LogReader {
 public:
  enum class Result {
    kRecord,     // *record holds the next logical record
    kBadRecord,  // damage at *offset (see error()); reading may continue
    kEnd,        // no more bytes
    kIOError,    // the file could not be read (see error())
  };

  LogReader(std::unique_ptr<SequentialFile> file, std::string path);

  // Checks the file header. A file shorter than a header is
  // Status::Corruption with "truncated header" in the message (recovery
  // treats that as torn when the segment is the newest); an unknown format
  // version is Status::NotSupported.
  Status ReadHeader();

  // *record stays valid until the next call.
  Result Read(std::string_view* record, uint64_t* offset);

  const std::string& error() const { return error_; }
  // File offset just past the last complete logical record returned (or past
  // the header): where a torn tail is cut off.
  uint64_t last_record_end() const { return last_record_end_; }
  // After kEnd: the file ended in zeros from last_record_end() on, where a
  // writer had written them ahead of its records (not damage).
  bool zero_tail() const { return zero_tail_; }
  // Version 3 segments carry sync marks. synced_through() is the highest
  // offset a mark read so far says the segment had been synced up to:
  // damage below it hit synced bytes, so it is corruption, not a torn tail.
  bool has_sync_marks() const { return version_ >= kFirstVersionWithSyncMarks; }
  uint64_t synced_through() const { return synced_through_; }

 private:
  enum class Physical { kFragment, kBad, kEnd, kIOError };
  Physical ReadPhysical(uint8_t* type, std::string_view* fragment, uint64_t* offset);
  Physical Bad(std::string_view why, uint64_t offset);
  Result AfterZeros(uint64_t* offset);

  std::unique_ptr<SequentialFile> file_;
  const std::string path_;
  std::unique_ptr<char[]> block_;
  std::string_view buffer_;    // unread part of the current block
  uint64_t buffer_offset_ = 0;  // file offset of buffer_.data()
  bool eof_ = false;
  bool resyncing_ = false;  // inside a damaged region, already reported
  std::string scratch_;  // a fragmented record being assembled
  std::string error_;
  uint64_t bad_offset_ = 0;
  uint64_t last_record_end_ = 0;
  uint32_t version_ = 0;
  uint8_t max_type_ = 0;
  bool bad_is_zeros_ = false;      // the damage reported last starts with a zeroed header
  bool skipped_nonzero_ = false;   // resyncing stepped over a byte that is not zero
  bool zero_tail_ = false;
  uint64_t synced_through_ = 0;
};

}  // namespace kvstore::wal
