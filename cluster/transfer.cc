#include "cluster/transfer.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <spdlog/spdlog.h>

namespace kvstore::cluster {

namespace fs = std::filesystem;

namespace {

Status Errno(const std::string& what) { return Status::IOError(what + ": " + std::strerror(errno)); }

bool SplitHostPort(const std::string& address, std::string* host, std::string* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  return true;
}

bool ValidComponent(const std::string& s) {
  return !s.empty() && s.size() < 256 && s != "." && s != ".." &&
         s.find('/') == std::string::npos && s.find('\0') == std::string::npos;
}

void SetTimeouts(int fd, int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool SendAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool SendAll(int fd, const std::string& s) { return SendAll(fd, s.data(), s.size()); }

bool SendAllFile(int fd, const std::string& s) {
  const char* p = s.data();
  size_t n = s.size();
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads one '\n'-terminated line (without it), byte by byte: lines are few
// and short, and nothing past the line may be consumed.
bool ReadLine(int fd, std::string* line) {
  line->clear();
  for (;;) {
    char c;
    ssize_t r = ::recv(fd, &c, 1, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    if (c == '\n') return true;
    if (line->size() > 4096) return false;
    line->push_back(c);
  }
}

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

// XXH3 of a whole file.
bool HashFile(const fs::path& path, uint64_t* hash, uint64_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  for (;;) {
    ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      ::close(fd);
      return false;
    }
    if (r == 0) break;
    XXH3_64bits_update(&state, buf.data(), static_cast<size_t>(r));
    total += static_cast<uint64_t>(r);
  }
  ::close(fd);
  *hash = XXH3_64bits_digest(&state);
  *size = total;
  return true;
}

std::string ListLine(const std::string& name, uint64_t size, uint64_t hash) {
  return "F " + name + " " + std::to_string(size) + " " + Hex(hash) + "\n";
}

// A checksums file is whole when it ends with the END line.
bool ReadChecksums(const fs::path& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    out->append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out->ends_with("END\n");
}

Status WriteFileSynced(const std::string& path, const std::string& contents) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create " + path);
  bool ok = SendAllFile(fd, contents) && ::fsync(fd) == 0;
  Status s = ok ? Status::OK() : Errno("write " + path);
  ::close(fd);
  return s;
}

}  // namespace

Status WriteChecksums(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().filename() == kChecksumsFile) continue;
    if (!e.is_regular_file()) return Status::IOError("not a file: " + e.path().string());
    files.push_back(e.path());
  }
  if (ec) return Status::IOError("list " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  std::string out;
  for (const fs::path& f : files) {
    uint64_t hash, size;
    if (!HashFile(f, &hash, &size)) return Errno("read " + f.string());
    out += ListLine(f.filename().string(), size, hash);
  }
  return WriteFileSynced(dir + "/" + kChecksumsFile, out + "END\n");
}

bool CheckpointServer::Retire(const std::string& id) {
  std::lock_guard lock(mu_);
  if (sending_ == id) return false;
  retired_.insert(id);
  return true;
}

Status CheckpointServer::Start(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || res == nullptr) {
    return Status::IOError("cannot resolve " + host);
  }
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || ::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
    Status s = Errno("checkpoint transfer: bind " + host + ":" + std::to_string(port));
    ::freeaddrinfo(res);
    if (fd >= 0) ::close(fd);
    return s;
  }
  ::freeaddrinfo(res);
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  listen_fd_ = fd;
  thread_ = std::thread([this] { Serve(); });
  return Status::OK();
}

void CheckpointServer::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

void CheckpointServer::Serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    // One peer at a time: only a follower installing a snapshot comes here,
    // and the timeouts stop a stalled one from holding the others for long.
    SetTimeouts(fd, 5000);
    ServeConnection(fd);
    ::close(fd);
    std::lock_guard lock(mu_);
    sending_.clear();
  }
}

void CheckpointServer::ServeConnection(int fd) {
  std::string line;
  while (!stop_ && ReadLine(fd, &line)) {
    std::vector<std::string> words;
    size_t pos = 0;
    while (pos <= line.size()) {
      size_t sp = line.find(' ', pos);
      if (sp == std::string::npos) sp = line.size();
      words.push_back(line.substr(pos, sp - pos));
      pos = sp + 1;
    }
    auto fail = [&](const std::string& msg) { return SendAll(fd, "ERR " + msg + "\n"); };
    if (words.size() < 2 || !ValidComponent(words[1])) {
      if (!fail("bad request")) return;
      continue;
    }
    const fs::path dir = fs::path(root_) / words[1];
    if (words[0] == "LIST" && words.size() == 2) {
      {
        int failing = fail_lists_.load();
        while (failing > 0 && !fail_lists_.compare_exchange_weak(failing, failing - 1)) {
        }
        std::lock_guard lock(mu_);
        if (retired_.count(words[1]) > 0 || failing > 0) {
          if (!fail("no checkpoint " + words[1])) return;
          continue;
        }
        sending_ = words[1];  // pinned until this connection ends
      }
      std::error_code ec;
      std::string sums;
      if (ReadChecksums(dir / kChecksumsFile, &sums)) {
        if (!SendAll(fd, sums)) return;
        continue;
      }
      // No precomputed list (a checkpoint from an older version): hash
      // here, a line at a time, so the fetcher hears something after each
      // file rather than after all of them.
      if (!fs::is_directory(dir, ec)) {
        if (!fail("no checkpoint " + words[1])) return;
        continue;
      }
      bool ok = true;
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        uint64_t hash, size;
        if (e.path().filename() == kChecksumsFile) continue;
        if (!e.is_regular_file() || !HashFile(e.path(), &hash, &size)) {
          ok = false;
          break;
        }
        if (!SendAll(fd, ListLine(e.path().filename().string(), size, hash))) return;
      }
      // A fetcher reads an ERR line after some F lines as a failure.
      if (!SendAll(fd, ok && !ec ? std::string("END\n") : "ERR cannot read checkpoint " + words[1] + "\n")) return;
    } else if (words[0] == "NEWEST" && words.size() == 2) {
      const std::string id = newest_ ? newest_(words[1]) : std::string();
      if (!SendAll(fd, id.empty() ? "ERR no checkpoint at or after " + words[1] + "\n" : "ID " + id + "\n")) return;
    } else if (words[0] == "GET" && words.size() == 3 && ValidComponent(words[2])) {
      int in = ::open((dir / words[2]).c_str(), O_RDONLY | O_CLOEXEC);
      struct stat st{};
      if (in < 0 || ::fstat(in, &st) != 0) {
        if (in >= 0) ::close(in);
        if (!fail("no file " + words[2])) return;
        continue;
      }
      bool ok = SendAll(fd, "OK " + std::to_string(st.st_size) + "\n");
      std::vector<char> buf(1 << 20);
      off_t left = st.st_size;
      while (ok && left > 0) {
        ssize_t r = ::read(in, buf.data(), std::min<size_t>(buf.size(), static_cast<size_t>(left)));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          ok = false;
          break;
        }
        ok = SendAll(fd, buf.data(), static_cast<size_t>(r));
        left -= r;
      }
      ::close(in);
      if (!ok) return;
    } else {
      if (!fail("bad request")) return;
    }
  }
}

namespace {

// A connection to a checkpoint server, closed when this goes.
class Connection {
 public:
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  Status Open(const std::string& address, int timeout_ms) {
    std::string host, port;
    if (!SplitHostPort(address, &host, &port)) return Status::InvalidArgument("bad address " + address);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) {
      return Status::IOError("cannot resolve " + address);
    }
    fd_ = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    Status s;
    if (fd_ < 0) {
      s = Errno("socket");
    } else {
      SetTimeouts(fd_, timeout_ms);
      if (::connect(fd_, res->ai_addr, res->ai_addrlen) != 0) s = Errno("connect to " + address);
    }
    ::freeaddrinfo(res);
    return s;
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

}  // namespace

Status FindNewestCheckpoint(const std::string& address, const std::string& min_id, std::string* id,
                            int timeout_ms) {
  if (!ValidComponent(min_id)) return Status::InvalidArgument("bad checkpoint id " + min_id);
  Connection conn;
  Status s = conn.Open(address, timeout_ms);
  if (!s.ok()) return s;
  std::string line;
  if (!SendAll(conn.fd(), "NEWEST " + min_id + "\n")) return Errno("send to " + address);
  if (!ReadLine(conn.fd(), &line)) return Status::IOError("no answer from " + address);
  if (line.starts_with("ERR ")) return Status::NotFound(address + ": " + line.substr(4));
  if (!line.starts_with("ID ") || !ValidComponent(line.substr(3)) || line.substr(3) < min_id) {
    return Status::Corruption(address + " answered \"" + line + "\" to NEWEST");
  }
  *id = line.substr(3);
  return Status::OK();
}

Status FetchCheckpoint(const std::string& address, const std::string& id, const std::string& dir,
                       int timeout_ms) {
  if (!ValidComponent(id)) return Status::InvalidArgument("bad checkpoint id " + id);
  Connection conn;
  Status opened = conn.Open(address, timeout_ms);
  if (!opened.ok()) return opened;
  const int fd = conn.fd();

  std::string line;
  if (!SendAll(fd, "LIST " + id + "\n")) return Errno("send to " + address);
  struct File {
    std::string name;
    uint64_t size;
    std::string hash;
  };
  std::vector<File> files;
  for (;;) {
    if (!ReadLine(fd, &line)) return Status::IOError("checkpoint list from " + address + " cut short");
    if (line == "END") break;
    if (line.starts_with("ERR ")) return Status::NotFound(address + ": " + line.substr(4));
    char name[256];
    unsigned long long size;
    char hash[17];
    if (std::sscanf(line.c_str(), "F %255s %llu %16s", name, &size, hash) != 3 || !ValidComponent(name)) {
      return Status::Corruption("bad checkpoint list line from " + address);
    }
    if (std::string(name) == kChecksumsFile) continue;
    files.push_back({name, size, hash});
  }
  std::error_code ec;
  if (!fs::create_directories(dir, ec) || ec) return Status::IOError("cannot create " + dir);
  std::vector<char> buf(1 << 20);
  for (const File& f : files) {
    if (!SendAll(fd, "GET " + id + " " + f.name + "\n")) return Errno("send to " + address);
    if (!ReadLine(fd, &line)) return Status::IOError("no answer from " + address);
    if (line != "OK " + std::to_string(f.size)) {
      return Status::Corruption(address + " answered \"" + line + "\" for " + f.name);
    }
    const std::string path = dir + "/" + f.name;
    int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) return Errno("create " + path);
    XXH3_state_t state;
    XXH3_64bits_reset(&state);
    uint64_t left = f.size;
    Status s;
    while (left > 0 && s.ok()) {
      ssize_t r = ::recv(fd, buf.data(), std::min<uint64_t>(buf.size(), left), 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        s = Status::IOError("transfer of " + f.name + " from " + address + " cut short");
        break;
      }
      XXH3_64bits_update(&state, buf.data(), static_cast<size_t>(r));
      for (ssize_t done = 0; done < r && s.ok();) {
        ssize_t w = ::write(out, buf.data() + done, static_cast<size_t>(r - done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) s = Errno("write " + path);
        else done += w;
      }
      left -= static_cast<uint64_t>(r);
    }
    if (s.ok() && ::fsync(out) != 0) s = Errno("fsync " + path);
    ::close(out);
    if (!s.ok()) return s;
    if (Hex(XXH3_64bits_digest(&state)) != f.hash) {
      return Status::Corruption("checksum mismatch on " + f.name + " from " + address);
    }
  }
  std::string sums;
  for (const File& f : files) sums += "F " + f.name + " " + std::to_string(f.size) + " " + f.hash + "\n";
  Status s = WriteFileSynced(dir + "/" + kChecksumsFile, sums + "END\n");
  if (!s.ok()) return s;
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  spdlog::info("fetched checkpoint {} ({} files) from {}", id, files.size(), address);
  return Status::OK();
}

}  // namespace kvstore::cluster
