// FaultInjectionEnv: an Env over another Env that fails on request, for
// tests of the failure paths. It can
//   - fail the Nth fdatasync from now (and every one after, if sticky),
//   - run out of space after a byte budget: the append that crosses it
//     writes the bytes that fit, then fails with NoSpace (a short write),
//   - fail the Nth append after writing half of it (an I/O error mid-write),
//   - simulate a machine crash: DropUnsyncedData cuts every file written
//     through it back to its last synced size (where zeros had been written
//     ahead, the unsynced bytes turn back into those zeros) and removes
//     files whose directory entry was never synced.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "engine/sync/mutex.h"
#include "kvstore/env.h"

namespace kvstore {

class FaultInjectionEnv final : public Env {
 public:
  explicit FaultInjectionEnv(Env* base) : base_(base) {}

  // The nth Sync from now fails (n = 1: the next one); 0 disables.
  void FailSyncAfter(int n, bool sticky = false) {
    MutexLock lock(&mu_);
    syncs_until_failure_ = n;
    sticky_sync_failure_ = sticky;
  }
  // Appends may write this many more bytes in total before NoSpace; < 0 means
  // unlimited.
  void SetSpaceLeft(int64_t bytes) {
    MutexLock lock(&mu_);
    space_left_ = bytes;
  }
  // Appends to files whose name contains pattern (".sst": tables only;
  // "MANIFEST-": manifests) fail with NoSpace and write nothing, while other
  // files still have room: a full disk that hits a flush or a compaction but
  // not the WAL. "" turns it off.
  void SetNoSpaceFor(std::string pattern) {
    MutexLock lock(&mu_);
    no_space_pattern_ = std::move(pattern);
  }
  // The nth Append from now writes half its bytes and fails with IOError.
  void FailAppendAfter(int n) {
    MutexLock lock(&mu_);
    appends_until_failure_ = n;
  }
  // From now on every write, sync and namespace change fails: the "power"
  // is off. Call before deleting the DB to simulate a crash, then
  // DropUnsyncedData.
  void SetActive(bool active) { active_ = active; }
  Status DropUnsyncedData();

  int sync_count() const { return sync_count_; }

  Status NewSequentialFile(const std::string& path,
                           std::unique_ptr<SequentialFile>* result) override {
    return base_->NewSequentialFile(path, result);
  }
  Status NewRandomAccessFile(const std::string& path,
                             std::unique_ptr<RandomAccessFile>* result) override {
    return base_->NewRandomAccessFile(path, result);
  }
  Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* result) override;
  Status NewAppendableFile(const std::string& path,
                           std::unique_ptr<WritableFile>* result) override;
  bool FileExists(const std::string& path) override { return base_->FileExists(path); }
  Status GetChildren(const std::string& dir, std::vector<std::string>* names) override {
    return base_->GetChildren(dir, names);
  }
  Status GetFileSize(const std::string& path, uint64_t* size) override {
    return base_->GetFileSize(path, size);
  }
  Status RemoveFile(const std::string& path) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  Status TruncateFile(const std::string& path, uint64_t size) override;
  Status LinkFile(const std::string& from, const std::string& to) override {
    if (!active_) return Status::IOError("fault injection: file system inactive");
    return base_->LinkFile(from, to);
  }
  Status CreateDir(const std::string& dir) override {
    if (!active_) return Status::IOError("fault injection: file system inactive");
    return base_->CreateDir(dir);
  }
  Status SyncDir(const std::string& dir) override;
  Status LockFile(const std::string& path, std::unique_ptr<FileLock>* lock) override {
    return base_->LockFile(path, lock);
  }

 private:
  friend class FaultInjectionWritableFile;
  struct FileState {
    uint64_t size = 0;
    uint64_t synced_size = 0;
    uint64_t zeros_end = 0;  // end of zeros written ahead of size (WriteZeros)
  };

  // Hooks called by the file wrapper.
  Status BeforeAppend(const std::string& path, size_t n, size_t* allowed);
  void AfterAppend(const std::string& path, uint64_t new_size);
  Status BeforeWriteZeros(uint64_t n);
  void AfterWriteZeros(const std::string& path, uint64_t end);
  Status BeforeSync();
  void AfterSync(const std::string& path);
  void AfterTruncate(const std::string& path, uint64_t size);

  Env* const base_;
  std::atomic<bool> active_{true};
  std::atomic<int> sync_count_{0};

  Mutex mu_;
  int syncs_until_failure_ GUARDED_BY(mu_) = 0;
  bool sticky_sync_failure_ GUARDED_BY(mu_) = false;
  bool sync_failed_ GUARDED_BY(mu_) = false;
  int appends_until_failure_ GUARDED_BY(mu_) = 0;
  int64_t space_left_ GUARDED_BY(mu_) = -1;
  std::string no_space_pattern_ GUARDED_BY(mu_);
  std::map<std::string, FileState> files_ GUARDED_BY(mu_);
  // Created, directory not yet synced.
  std::set<std::string> unsynced_new_files_ GUARDED_BY(mu_);
};

}  // namespace kvstore
