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

// Reads until n bytes, the end of the file, or an error. offset < 0 reads at
// the file position (read); otherwise at offset (pread).
Status ReadFully(int fd, const std::string& path, int64_t offset, size_t n, std::string_view* result,
                 char* scratch) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = offset < 0 ? ::read(fd, scratch + got, n - got)
                           : ::pread(fd, scratch + got, n - got, static_cast<off_t>(offset) + static_cast<off_t>(got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return PosixError(path, errno);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  *result = std::string_view(scratch, got);
  return Status::OK();
}

class PosixSequentialFile final : public SequentialFile {
 public:
  PosixSequentialFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixSequentialFile() override { ::close(fd_); }

  Status Read(size_t n, std::string_view* result, char* scratch) override {
    return ReadFully(fd_, path_, -1, n, result, scratch);
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
    if (offset > static_cast<uint64_t>(INT64_MAX)) return Status::InvalidArgument(path_ + ": offset too large");
    return ReadFully(fd_, path_, static_cast<int64_t>(offset), n, result, scratch);
  }

 private:
  const std::string path_;
  const int fd_;
};

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd, uint64_t offset)
      : path_(std::move(path)), fd_(fd), offset_(offset) {}
  ~PosixWritableFile() override {
    Unmap();
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(std::string_view data) override {
    // One pwrite per call: the kernel copies in order, and a process killed
    // during the call leaves a prefix of data in the file, never a hole.
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
    return Status::OK();
  }

  Status WriteZeros(uint64_t offset, uint64_t length) override {
    // Written, not fallocate'd: fallocate leaves unwritten extents, and
    // converting one on the first write into it is a journal commit again.
    static const char kZeros[64 << 10] = {};
    while (length > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(length, sizeof kZeros));
      ssize_t w = ::pwrite(fd_, kZeros, n, static_cast<off_t>(offset));
      if (w < 0) {
        if (errno == EINTR) continue;
        return PosixError(path_, errno);
      }
      offset += static_cast<uint64_t>(w);
      length -= static_cast<uint64_t>(w);
    }
    return Status::OK();
  }

  Status Sync() override {
    if (::fdatasync(fd_) != 0) return PosixError(path_ + ": fdatasync", errno);
    return Status::OK();
  }

  Status Truncate(uint64_t size) override {
    // A store into a mapping past the new end would raise SIGBUS.
    Unmap();
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return PosixError(path_, errno);
    offset_ = size;
    return Status::OK();
  }

  Status MapForWrite(uint64_t offset, uint64_t length, char** data) override {
    *data = nullptr;
    Unmap();
    if (fd_ < 0 || length == 0) return Status::InvalidArgument(path_ + ": nothing to map");
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t start = offset / page * page;
    const uint64_t end = offset + length;
    struct stat st;
    if (::fstat(fd_, &st) != 0) return PosixError(path_, errno);
    // Allocated, not written: the blocks read as zeros, and a store into
    // them neither reads the disk on its page fault nor finds a block
    // missing (a full disk fails here, not as SIGBUS on the store).
    if (static_cast<uint64_t>(st.st_size) < end &&
        ::fallocate(fd_, 0, static_cast<off_t>(start), static_cast<off_t>(end - start)) != 0) {
      return PosixError(path_ + ": fallocate", errno);
    }
    void* p = ::mmap(nullptr, end - start, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, static_cast<off_t>(start));
    if (p == MAP_FAILED) return PosixError(path_ + ": mmap", errno);
    map_ = p;
    map_length_ = end - start;
    *data = static_cast<char*>(p) + (offset - start);
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
  void Unmap() {
    if (map_ != nullptr) ::munmap(map_, map_length_);
    map_ = nullptr;
  }

  const std::string path_;
  int fd_;
  uint64_t offset_;  // where the next Append goes
  void* map_ = nullptr;  // MapForWrite's, until the next one, Truncate or Close
  uint64_t map_length_ = 0;
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
    // Read-write, not write-only: MapForWrite's shared mapping needs it.
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

  Status LinkFile(const std::string& from, const std::string& to) override {
    if (::link(from.c_str(), to.c_str()) != 0) return PosixError(from + " -> " + to, errno);
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
