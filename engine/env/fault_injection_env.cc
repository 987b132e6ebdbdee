#include "engine/env/fault_injection_env.h"

#include <algorithm>
#include <memory>

namespace kvstore {

namespace {
std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}
}  // namespace

class FaultInjectionWritableFile final : public WritableFile {
 public:
  FaultInjectionWritableFile(FaultInjectionEnv* env, std::string path,
                             std::unique_ptr<WritableFile> base, uint64_t size)
      : env_(env), path_(std::move(path)), base_(std::move(base)), size_(size) {}

  Status Append(std::string_view data) override {
    size_t allowed = data.size();
    Status fault = env_->BeforeAppend(path_, data.size(), &allowed);
    if (allowed > 0) {
      Status s = base_->Append(data.substr(0, allowed));
      if (!s.ok()) return s;
      size_ += allowed;
      env_->AfterAppend(path_, size_);
    }
    return fault;
  }
  Status Sync() override {
    Status s = env_->BeforeSync();
    if (!s.ok()) return s;
    s = base_->Sync();
    if (s.ok()) env_->AfterSync(path_);
    return s;
  }
  Status Truncate(uint64_t size) override {
    if (!env_->active_) return Status::IOError("fault injection: file system inactive");
    Status s = base_->Truncate(size);
    if (s.ok()) {
      size_ = size;
      env_->AfterTruncate(path_, size);
    }
    return s;
  }
  Status WriteZeros(uint64_t offset, uint64_t length) override {
    Status s = env_->BeforeWriteZeros(length);
    if (!s.ok()) return s;
    s = base_->WriteZeros(offset, length);
    if (s.ok()) env_->AfterWriteZeros(path_, offset + length);
    return s;
  }
  Status Close() override { return base_->Close(); }

 private:
  FaultInjectionEnv* const env_;
  const std::string path_;
  std::unique_ptr<WritableFile> base_;
  uint64_t size_;
};

Status FaultInjectionEnv::NewWritableFile(const std::string& path,
                                          std::unique_ptr<WritableFile>* result) {
  if (!active_) return Status::IOError("fault injection: file system inactive");
  std::unique_ptr<WritableFile> base;
  Status s = base_->NewWritableFile(path, &base);
  if (!s.ok()) return s;
  {
    MutexLock lock(&mu_);
    files_[path] = FileState{};
    unsynced_new_files_.insert(path);
  }
  *result = std::make_unique<FaultInjectionWritableFile>(this, path, std::move(base), 0);
  return Status::OK();
}

Status FaultInjectionEnv::NewAppendableFile(const std::string& path,
                                            std::unique_ptr<WritableFile>* result) {
  if (!active_) return Status::IOError("fault injection: file system inactive");
  bool existed = base_->FileExists(path);
  uint64_t size = 0;
  if (existed) {
    Status s = base_->GetFileSize(path, &size);
    if (!s.ok()) return s;
  }
  std::unique_ptr<WritableFile> base;
  Status s = base_->NewAppendableFile(path, &base);
  if (!s.ok()) return s;
  {
    MutexLock lock(&mu_);
    auto [it, inserted] = files_.try_emplace(path, FileState{size, size});
    (void)it;
    if (!existed) unsynced_new_files_.insert(path);
    (void)inserted;
  }
  *result = std::make_unique<FaultInjectionWritableFile>(this, path, std::move(base), size);
  return Status::OK();
}

Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  if (!active_) return Status::IOError("fault injection: file system inactive");
  Status s = base_->RemoveFile(path);
  if (s.ok()) {
    MutexLock lock(&mu_);
    files_.erase(path);
    unsynced_new_files_.erase(path);
  }
  return s;
}

Status FaultInjectionEnv::RenameFile(const std::string& from, const std::string& to) {
  if (!active_) return Status::IOError("fault injection: file system inactive");
  Status s = base_->RenameFile(from, to);
  if (s.ok()) {
    MutexLock lock(&mu_);
    if (auto it = files_.find(from); it != files_.end()) {
      files_[to] = it->second;
      files_.erase(it);
    }
    // A rename is a namespace change: until the directory is synced the new
    // name may not survive a crash.
    unsynced_new_files_.erase(from);
    unsynced_new_files_.insert(to);
  }
  return s;
}

Status FaultInjectionEnv::TruncateFile(const std::string& path, uint64_t size) {
  if (!active_) return Status::IOError("fault injection: file system inactive");
  Status s = base_->TruncateFile(path, size);
  if (s.ok()) AfterTruncate(path, size);
  return s;
}

Status FaultInjectionEnv::SyncDir(const std::string& dir) {
  if (!active_) return Status::IOError("fault injection: file system inactive");
  Status s = base_->SyncDir(dir);
  if (s.ok()) {
    MutexLock lock(&mu_);
    for (auto it = unsynced_new_files_.begin(); it != unsynced_new_files_.end();) {
      if (DirName(*it) == dir) {
        it = unsynced_new_files_.erase(it);
      } else {
        ++it;
      }
    }
  }
  return s;
}

Status FaultInjectionEnv::BeforeAppend(const std::string& path, size_t n, size_t* allowed) {
  if (!active_) {
    *allowed = 0;
    return Status::IOError("fault injection: file system inactive");
  }
  MutexLock lock(&mu_);
  if (appends_until_failure_ > 0 && --appends_until_failure_ == 0) {
    *allowed = n / 2;
    return Status::IOError("fault injection: append failed midway");
  }
  if (!no_space_pattern_.empty() &&
      std::string_view(path).substr(path.rfind('/') + 1).find(no_space_pattern_) != std::string_view::npos) {
    *allowed = 0;
    return Status::NoSpace("fault injection: No space left on device");
  }
  if (space_left_ >= 0) {
    if (static_cast<uint64_t>(space_left_) < n) {
      *allowed = static_cast<size_t>(space_left_);
      space_left_ = 0;
      return Status::NoSpace("fault injection: No space left on device");
    }
    space_left_ -= static_cast<int64_t>(n);
  }
  *allowed = n;
  return Status::OK();
}

Status FaultInjectionEnv::BeforeWriteZeros(uint64_t n) {
  if (!active_) return Status::IOError("fault injection: file system inactive");
  MutexLock lock(&mu_);
  // Zeros take space like appends, but are not appends: FailAppendAfter
  // counts the writes a test can see.
  if (space_left_ >= 0) {
    if (static_cast<uint64_t>(space_left_) < n) return Status::NoSpace("fault injection: No space left on device");
    space_left_ -= static_cast<int64_t>(n);
  }
  return Status::OK();
}

void FaultInjectionEnv::AfterWriteZeros(const std::string& path, uint64_t end) {
  MutexLock lock(&mu_);
  FileState& f = files_[path];
  f.zeros_end = std::max(f.zeros_end, end);
}

void FaultInjectionEnv::AfterAppend(const std::string& path, uint64_t new_size) {
  MutexLock lock(&mu_);
  files_[path].size = new_size;
}

Status FaultInjectionEnv::BeforeSync() {
  if (!active_) return Status::IOError("fault injection: file system inactive");
  ++sync_count_;
  MutexLock lock(&mu_);
  if (sync_failed_ && sticky_sync_failure_) {
    return Status::IOError("fault injection: fdatasync failed (sticky)");
  }
  if (syncs_until_failure_ > 0 && --syncs_until_failure_ == 0) {
    sync_failed_ = true;
    return Status::IOError("fault injection: fdatasync failed");
  }
  return Status::OK();
}

void FaultInjectionEnv::AfterSync(const std::string& path) {
  MutexLock lock(&mu_);
  FileState& f = files_[path];
  f.synced_size = f.size;
}

void FaultInjectionEnv::AfterTruncate(const std::string& path, uint64_t size) {
  MutexLock lock(&mu_);
  if (auto it = files_.find(path); it != files_.end()) {
    it->second.size = size;
    if (it->second.synced_size > size) it->second.synced_size = size;
    if (it->second.zeros_end > size) it->second.zeros_end = size;
  }
}

Status FaultInjectionEnv::DropUnsyncedData() {
  MutexLock lock(&mu_);
  for (const std::string& path : unsynced_new_files_) {
    Status s = base_->RemoveFile(path);
    if (!s.ok() && !s.IsNotFound()) return s;
    files_.erase(path);
  }
  unsynced_new_files_.clear();
  for (auto& [path, state] : files_) {
    if (state.size > state.synced_size) {
      Status s = base_->TruncateFile(path, state.synced_size);
      if (!s.ok()) return s;
      if (state.zeros_end > state.synced_size) {
        // Appends that overwrote zeros written ahead and were never
        // synced: after the crash those blocks hold the zeros again.
        std::unique_ptr<WritableFile> f;
        s = base_->NewAppendableFile(path, &f);
        if (s.ok()) s = f->Append(std::string(state.zeros_end - state.synced_size, '\0'));
        if (f != nullptr) (void)f->Close();
        if (!s.ok()) return s;
      }
      state.size = state.synced_size;
    }
  }
  return Status::OK();
}

}  // namespace kvstore
