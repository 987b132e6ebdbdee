// In-memory files and a read-only in-memory Env for the fuzz targets: a
// file system would cost more per input than the parsers being fuzzed, and
// would leave files behind.
#pragma once

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/env.h"

namespace kvstore::fuzz {

class StringSequentialFile final : public SequentialFile {
 public:
  explicit StringSequentialFile(std::string_view data) : data_(data) {}
  Status Read(size_t n, std::string_view* result, char* scratch) override {
    n = std::min(n, data_.size() - pos_);
    if (n > 0) std::memcpy(scratch, data_.data() + pos_, n);
    pos_ += n;
    *result = std::string_view(scratch, n);
    return Status::OK();
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

class StringRandomAccessFile final : public RandomAccessFile {
 public:
  explicit StringRandomAccessFile(std::string_view data) : data_(data) {}
  Status Read(uint64_t offset, size_t n, std::string_view* result, char* scratch) const override {
    if (offset > data_.size()) return Status::IOError("read past the end");
    n = std::min<size_t>(n, data_.size() - offset);
    if (n > 0) std::memcpy(scratch, data_.data() + offset, n);
    *result = std::string_view(scratch, n);
    return Status::OK();
  }

 private:
  std::string_view data_;
};

// Files are views of bytes the caller keeps alive; every write fails, so a
// recovery path that tries to write shows up as an error, not as a file.
class ReadOnlyMemEnv final : public Env {
 public:
  std::map<std::string, std::string_view> files;

  Status NewSequentialFile(const std::string& path, std::unique_ptr<SequentialFile>* r) override {
    auto it = files.find(path);
    if (it == files.end()) return Status::NotFound(path);
    *r = std::make_unique<StringSequentialFile>(it->second);
    return Status::OK();
  }
  Status NewRandomAccessFile(const std::string& path, std::unique_ptr<RandomAccessFile>* r) override {
    auto it = files.find(path);
    if (it == files.end()) return Status::NotFound(path);
    *r = std::make_unique<StringRandomAccessFile>(it->second);
    return Status::OK();
  }
  Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>*) override { return ReadOnly(path); }
  Status NewAppendableFile(const std::string& path, std::unique_ptr<WritableFile>*) override { return ReadOnly(path); }
  bool FileExists(const std::string& path) override { return files.count(path) != 0; }
  Status GetChildren(const std::string& dir, std::vector<std::string>* names) override {
    names->clear();
    for (const auto& [path, data] : files) {
      if (path.size() > dir.size() + 1 && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/') {
        names->push_back(path.substr(dir.size() + 1));
      }
    }
    return Status::OK();
  }
  Status GetFileSize(const std::string& path, uint64_t* size) override {
    auto it = files.find(path);
    if (it == files.end()) return Status::NotFound(path);
    *size = it->second.size();
    return Status::OK();
  }
  Status RemoveFile(const std::string& path) override { return ReadOnly(path); }
  Status RenameFile(const std::string& from, const std::string&) override { return ReadOnly(from); }
  Status TruncateFile(const std::string& path, uint64_t) override { return ReadOnly(path); }
  Status LinkFile(const std::string& from, const std::string&) override { return ReadOnly(from); }
  Status CreateDir(const std::string&) override { return Status::OK(); }
  Status SyncDir(const std::string& dir) override { return ReadOnly(dir); }
  Status LockFile(const std::string& path, std::unique_ptr<FileLock>*) override { return ReadOnly(path); }

 private:
  static Status ReadOnly(const std::string& path) { return Status::IOError(path + ": read-only fuzz env"); }
};

}  // namespace kvstore::fuzz
