// Env: the file-system seam. The engine does all file I/O through it, so that
// tests can inject failures (failed fsync, short writes, a full disk, a crash
// that drops unsynced data) and embedders can supply their own.
//
// Thread safety: an Env may be used from many threads at once. A file object
// is used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/status.h"

namespace kvstore {

// A file read front to back.
class SequentialFile {
 public:
  virtual ~SequentialFile() = default;
  // Reads up to n bytes into scratch; *result points at what was read, which
  // is shorter than n only at the end of the file.
  virtual Status Read(size_t n, std::string_view* result, char* scratch) = 0;
};

// A file read at any offset, from many threads at once.
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads up to n bytes at offset into scratch; *result may point into
  // scratch or elsewhere, and is shorter than n only at the end of the file.
  virtual Status Read(uint64_t offset, size_t n, std::string_view* result, char* scratch) const = 0;
};

// A file written at its end.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Writes all of data, or fails. After a failure some prefix of data may
  // have reached the file; Size() is then unknown until Truncate succeeds.
  virtual Status Append(std::string_view data) = 0;
  // fdatasync: everything appended so far is durable once this returns OK.
  virtual Status Sync() = 0;
  // Cuts the file back to size bytes (used to undo a failed append); the
  // append position moves there too.
  virtual Status Truncate(uint64_t size) = 0;
  // Really writes zeros over [offset, offset + length), which lies at or
  // past the append position; the position does not move. Later appends
  // then overwrite blocks the file already has, so an fdatasync after them
  // has no file size or block allocation to commit (on ext4 that is a
  // journal commit saved per sync). Durable after the next Sync, like an
  // append. The default does nothing: appends then grow the file.
  virtual Status WriteZeros(uint64_t offset, uint64_t length) {
    (void)offset;
    (void)length;
    return Status::OK();
  }
  // Maps [offset, offset + length) of the file for writing with plain
  // stores instead of Append, and sets *data to offset's byte; grows the
  // file over that range first (with blocks that read as zeros) where it is
  // shorter. A store there is in the operating system's page cache once it
  // completes, as an Append's bytes are once it returns: it survives a
  // crash of the process, and the next Sync makes it durable. The append
  // position does not move. The mapping lasts until the next MapForWrite,
  // Truncate or Close. NotSupported (the default): use Append.
  virtual Status MapForWrite(uint64_t offset, uint64_t length, char** data) {
    (void)offset;
    (void)length;
    *data = nullptr;
    return Status::NotSupported("MapForWrite");
  }
  virtual Status Close() = 0;
};

// A lock on a file held by this process; released when destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Env {
 public:
  virtual ~Env() = default;

  // The POSIX file system. Never deleted.
  static Env* Default();

  virtual Status NewSequentialFile(const std::string& path,
                                   std::unique_ptr<SequentialFile>* result) = 0;
  virtual Status NewRandomAccessFile(const std::string& path,
                                     std::unique_ptr<RandomAccessFile>* result) = 0;
  // Creates the file, or truncates it if it exists.
  virtual Status NewWritableFile(const std::string& path,
                                 std::unique_ptr<WritableFile>* result) = 0;
  // Opens the file for appending at its current end, creating it if needed.
  virtual Status NewAppendableFile(const std::string& path,
                                   std::unique_ptr<WritableFile>* result) = 0;

  virtual bool FileExists(const std::string& path) = 0;
  // Names (not paths) of the entries of dir.
  virtual Status GetChildren(const std::string& dir, std::vector<std::string>* names) = 0;
  virtual Status GetFileSize(const std::string& path, uint64_t* size) = 0;
  virtual Status RemoveFile(const std::string& path) = 0;
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  virtual Status TruncateFile(const std::string& path, uint64_t size) = 0;
  // A hard link: to names the same file as from (same file system).
  virtual Status LinkFile(const std::string& from, const std::string& to) = 0;
  // Creates dir; OK if it already exists.
  virtual Status CreateDir(const std::string& dir) = 0;
  // fsync of the directory itself, so that creations, renames and removals
  // of its entries survive a crash.
  virtual Status SyncDir(const std::string& dir) = 0;

  // Takes an exclusive advisory lock (flock) on path, creating it if needed.
  // Fails with Status::Busy when another process or DB holds it.
  virtual Status LockFile(const std::string& path, std::unique_ptr<FileLock>* lock) = 0;
};

}  // namespace kvstore
