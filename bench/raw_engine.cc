// The raw engine: the floor for durable writes. Each Put appends key+value
// (no framing, no checksum, no index) to a file opened with O_APPEND, in one
// writev, and with sync calls fdatasync after every append. Each thread has
// its own file, so threads never share a lock or a sync. It cannot read:
// kvbench skips read workloads for it.
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_engine.h"

namespace kvbench {
namespace {

BenchStatus Errno(const std::string& what) {
  return BenchStatus::Error(what + ": " + std::strerror(errno));
}

class RawEngine final : public BenchEngine {
 public:
  ~RawEngine() override { (void)Close(); }

  const char* name() const override { return "raw"; }
  bool SupportsReads() const override { return false; }

  BenchStatus Open(const EngineConfig& config) override {
    sync_ = config.sync;
    for (int t = 0; t < config.threads; t++) {
      std::string path = config.dir + "/thread-" + std::to_string(t) + ".dat";
      int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0) return Errno("open " + path);
      files_.push_back(File{fd, std::move(path)});
    }
    return BenchStatus::OK();
  }

  BenchStatus Put(int thread, std::string_view key, std::string_view value) override {
    const File& f = files_[thread];
    iovec iov[2] = {{const_cast<char*>(key.data()), key.size()},
                    {const_cast<char*>(value.data()), value.size()}};
    const size_t want = key.size() + value.size();
    ssize_t n = ::writev(f.fd, iov, 2);
    if (n < 0) return Errno("writev " + f.path);
    if (static_cast<size_t>(n) != want) {
      return BenchStatus::Error("writev " + f.path + ": short write of " + std::to_string(n) +
                                " of " + std::to_string(want) + " bytes");
    }
    if (sync_ && ::fdatasync(f.fd) != 0) return Errno("fdatasync " + f.path);
    return BenchStatus::OK();
  }

  BenchStatus Get(int, std::string_view, std::string*, bool*) override {
    return BenchStatus::Error("raw: reads are not supported");
  }

  std::unique_ptr<BenchIterator> NewIterator(int) override { return nullptr; }

  BenchStatus CompactAll() override { return BenchStatus::OK(); }

  BenchStatus Close() override {
    BenchStatus result;
    for (const File& f : files_) {
      if (::close(f.fd) != 0 && result.ok()) result = Errno("close " + f.path);
    }
    files_.clear();
    return result;
  }

 private:
  struct File {
    int fd;
    std::string path;
  };
  bool sync_ = true;
  std::vector<File> files_;
};

}  // namespace

std::unique_ptr<BenchEngine> NewRawEngine() { return std::make_unique<RawEngine>(); }

}  // namespace kvbench
