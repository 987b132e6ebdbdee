// The POSIX Env: plain syscalls, no user-space buffering, so that what
// Append returns OK for has reached the kernel and survives a process crash.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "kvstore/env.h"

namespace kvstore {

namespace {

Status PosixError(std::string_view context, int err) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) return Status::NoSpace(msg);
  if (err == ENOENT) return Status::NotFound(msg);
  return Status::IOError(msg);
}

class PosixSequentialFile final : public SequentialFile {
 public:
  PosixSequentialFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixSequentialFile() override { ::close(fd_); }

  Status Read(size_t n, std::string_view* result, char* scratch) override {
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::read(fd_, scratch + got, n - got);
      if (r < 0) {
        if (errno == EINTR) continue;
        return PosixError(path_, errno);
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    *result = std::string_view(scratch, got);
    return Status::OK();
  }

 private:
  const std::string path_;
  const int fd_;
};

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixRandomAccessFile() override { ::close(fd_); }

  Status Read(uint64_t offset, size_t n, std::string_view* result, char* scratch) const override {
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::pread(fd_, scratch + got, n - got, static_cast<off_t>(offset + got));
      if (r < 0) {
        if (errno == EINTR) continue;
        return PosixError(path_, errno);
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    *result = std::string_view(scratch, got);
    return Status::OK();
  }

 private:
  const std::string path_;
  const int fd_;
};

// Appends that land in the prefilled region are copied into a shared
// mapping of it instead of going through pwrite: the bytes are in the page
// cache as soon as the copy ends, so they survive a crash of the process
// just the same, and fdatasync writes them back like any dirty page, but
// an append costs no system call. The prefilled blocks were written (as
// zeros) with pwrite, so storing into them never needs a new block: a full
// disk cannot surface as SIGBUS here.
class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd, uint64_t offset)
      : path_(std::move(path)), fd_(fd), offset_(offset), end_(offset) {}
  ~PosixWritableFile() override {
    Unmap();
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(std::string_view data) override {
    if (map_ != nullptr && offset_ >= map_offset_ && offset_ + data.size() <= map_offset_ + map_size_) {
      std::memcpy(map_ + (offset_ - map_offset_), data.data(), data.size());
      offset_ += data.size();
      return Status::OK();
    }
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t w = ::pwrite(fd_, p, left, static_cast<off_t>(offset_));
      if (w < 0) {
        if (errno == EINTR) continue;
        return PosixError(path_, errno);
      }
      p += w;
      left -= static_cast<size_t>(w);
      offset_ += static_cast<uint64_t>(w);
    }
    end_ = std::max(end_, offset_);
    return Status::OK();
  }

  Status Prefill(uint64_t size) override {
    static const std::string zeros(64 * 1024, '\0');
    while (end_ < size) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), size - end_));
      ssize_t w = ::pwrite(fd_, zeros.data(), n, static_cast<off_t>(end_));
      if (w < 0) {
        if (errno == EINTR) continue;
        return PosixError(path_, errno);
      }
      end_ += static_cast<uint64_t>(w);
    }
    Map();
    return Status::OK();
  }

  Status Sync() override {
    if (::fdatasync(fd_) != 0) return PosixError(path_ + ": fdatasync", errno);
    return Status::OK();
  }

  Status Truncate(uint64_t size) override {
    Unmap();  // a mapping past the end of the file would fault on access
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return PosixError(path_, errno);
    offset_ = size;
    end_ = size;
    return Status::OK();
  }

  Status Close() override {
    Unmap();
    if (fd_ < 0) return Status::OK();
    int r = ::close(fd_);
    fd_ = -1;
    if (r != 0) return PosixError(path_, errno);
    return Status::OK();
  }

 private:
  // Maps [offset_ rounded down to a page, end_). Without a mapping, appends
  // simply use pwrite.
  void Map() {
    Unmap();
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t start = offset_ / page * page;
    if (end_ <= start) return;
    void* m = ::mmap(nullptr, end_ - start, PROT_WRITE, MAP_SHARED, fd_, static_cast<off_t>(start));
    if (m == MAP_FAILED) return;
    map_ = static_cast<char*>(m);
    map_offset_ = start;
    map_size_ = end_ - start;
  }
  void Unmap() {
    if (map_ != nullptr) ::munmap(map_, map_size_);
    map_ = nullptr;
    map_size_ = 0;
  }

  const std::string path_;
  int fd_;
  uint64_t offset_;  // where the next Append goes
  uint64_t end_;     // the file's size, past offset_ when prefilled
  char* map_ = nullptr;  // the prefilled region, [map_offset_, map_offset_ + map_size_)
  uint64_t map_offset_ = 0;
  uint64_t map_size_ = 0;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }

 private:
  const int fd_;
};

class PosixEnv final : public Env {
 public:
  Status NewSequentialFile(const std::string& path,
                           std::unique_ptr<SequentialFile>* result) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return PosixError(path, errno);
    *result = std::make_unique<PosixSequentialFile>(path, fd);
    return Status::OK();
  }

  Status NewRandomAccessFile(const std::string& path,
                             std::unique_ptr<RandomAccessFile>* result) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return PosixError(path, errno);
    *result = std::make_unique<PosixRandomAccessFile>(path, fd);
    return Status::OK();
  }

  Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* result) override {
    // Read-write: a shared writable mapping needs it (see PosixWritableFile).
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return PosixError(path, errno);
    *result = std::make_unique<PosixWritableFile>(path, fd, 0);
    return Status::OK();
  }

  Status NewAppendableFile(const std::string& path,
                           std::unique_ptr<WritableFile>* result) override {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return PosixError(path, errno);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      Status s = PosixError(path, errno);
      ::close(fd);
      return s;
    }
    *result = std::make_unique<PosixWritableFile>(path, fd, static_cast<uint64_t>(st.st_size));
    return Status::OK();
  }

  bool FileExists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }

  Status GetChildren(const std::string& dir, std::vector<std::string>* names) override {
    names->clear();
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return PosixError(dir, errno);
    while (struct dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      names->emplace_back(e->d_name);
    }
    ::closedir(d);
    return Status::OK();
  }

  Status GetFileSize(const std::string& path, uint64_t* size) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return PosixError(path, errno);
    *size = static_cast<uint64_t>(st.st_size);
    return Status::OK();
  }

  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return PosixError(path, errno);
    return Status::OK();
  }

  Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return PosixError(from + " -> " + to, errno);
    return Status::OK();
  }

  Status TruncateFile(const std::string& path, uint64_t size) override {
    if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0) return PosixError(path, errno);
    return Status::OK();
  }

  Status CreateDir(const std::string& dir) override {
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return PosixError(dir, errno);
    return Status::OK();
  }

  Status SyncDir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return PosixError(dir, errno);
    Status s;
    if (::fsync(fd) != 0) s = PosixError(dir + ": fsync", errno);
    ::close(fd);
    return s;
  }

  Status LockFile(const std::string& path, std::unique_ptr<FileLock>* lock) override {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return PosixError(path, errno);
    // flock locks belong to the open file description, so a second Open in
    // this same process conflicts just as another process would.
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) {
        return Status::Busy(path + ": the data directory is in use by another DB instance "
                                   "(held lock)");
      }
      return PosixError(path, err);
    }
    *lock = std::make_unique<PosixFileLock>(fd);
    return Status::OK();
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();  // never destroyed: may be used during static teardown
  return env;
}

}  // namespace kvstore
