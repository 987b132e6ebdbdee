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
  struct Options {
    // Keep this many bytes of zeros written ahead of the last record, so
    // that appends overwrite blocks the file already has and an fdatasync
    // after them need not commit a new file size (docs/format/wal.md,
    // "Writing"). 0: appends grow the file.
    uint64_t prefill_bytes = 0;
    // Record, at the start of each group written after a sync, how far the
    // segment had been synced (format version 3), so that recovery can tell
    // unsynced blocks lost in a power failure from damage to synced ones.
    // Without marks the file is stamped version 2.
    bool sync_marks = false;
    // From the first group that is not to be synced on, write every group
    // of the segment with stores into a mapping of the file
    // (WritableFile::MapForWrite) rather than with a pwrite each, where the
    // file can be mapped. The bytes are in the page cache just the same
    // when AddRecords returns, and survive a crash of the process; what a
    // write without sync saves is the system call, half the time of a
    // small write (kvbench fillseq, no sync). A segment that is only ever
    // synced keeps its pwrites and its zeros written ahead.
    bool map_unsynced = false;
  };

  // Creates a new segment at path (writes and syncs its header, and the
  // zeros ahead; the caller syncs the directory).
  static Status Create(Env* env, const std::string& path, std::unique_ptr<LogWriter>* writer) {
    return Create(env, path, Options(), writer);
  }
  static Status Create(Env* env, const std::string& path, const Options& options,
                       std::unique_ptr<LogWriter>* writer);

  // Appends the records in one write call. On failure nothing of them stays
  // in the file (the partial write is cut off again) when healthy() still
  // holds afterwards; otherwise the segment's tail is unknown and the writer
  // must not be used again.
  // will_sync: Sync is called next (see Options::map_unsynced).
  Status AddRecords(std::span<const std::string_view> records, bool will_sync = true);
  Status AddRecord(std::string_view record) { return AddRecords({&record, 1}); }

  // fdatasync of everything appended so far.
  Status Sync();
  // Cuts off the zeros written ahead and syncs a segment that is done: call
  // before a newer segment is created, so that only the newest segment can
  // ever end in a torn write or in zeros, which is what recovery relies on.
  Status Finish();
  // Cuts off the zeros written ahead (not synced: a crash may bring them
  // back, which recovery handles) and closes the file.
  Status Close();

  bool healthy() const { return healthy_; }
  // Bytes of header and records (not the zeros ahead of them).
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  LogWriter(std::string path, std::unique_ptr<WritableFile> file, uint64_t size, const Options& options)
      : path_(std::move(path)),
        file_(std::move(file)),
        options_(options),
        size_(size),
        synced_size_(size),
        marked_size_(size),
        zeros_end_(size) {}
  void EncodeRecord(std::string_view record, uint64_t* offset);
  void EncodeSyncMark(uint64_t* offset);
  void EmitPhysical(uint8_t type, const char* data, size_t length);
  void WriteZerosAhead();
  Status TrimZeros();
  // Stores buffer_ at size_ through a mapping of the file.
  Status StoreMapped();

  const std::string path_;
  std::unique_ptr<WritableFile> file_;
  const Options options_;
  uint64_t size_;         // bytes durably appended or at least handed to the kernel
  uint64_t synced_size_;  // size_ at the last successful sync
  uint64_t marked_size_;  // synced_size_ as the last sync mark written records it
  uint64_t zeros_end_;    // the file's end, past size_ when zeros were written ahead
  bool healthy_ = true;
  bool synced_records_ = false;  // Sync() has been called: zeros ahead pay off
  std::string buffer_;  // the encoded group, reused between calls
  // Whether groups go through a mapping (see Options::map_unsynced): once
  // one has, the file's append position is stale and every later group
  // does. The current mapping covers offsets [map_begin_, map_end_) at map_;
  // the file drops it on Truncate.
  bool mapped_ = false;
  bool map_unsupported_ = false;
  char* map_ = nullptr;
  uint64_t map_begin_ = 0;
  uint64_t map_end_ = 0;
};

}  // namespace kvstore::wal
