#include "bench/suite.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include "bench/bench_engine.h"
#include "bench/cluster_bench.h"
#include "bench/engine_bench.h"
#include "bench/histogram.h"
#include "tests/support/procs.h"
#include "bench/report.h"
#include "net/client.h"

namespace kvbench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

enum class Kind { kSet, kGet, kBulkSet, kByValue, kFulltext, kSemantic };

struct Op {
  Kind kind;
  uint64_t key;
};

struct Workload {
  std::string group, name;
  std::string prefix = "key";
  Kind kind = Kind::kSet;
  int clients = 50;
  int pipeline = 1;
  uint64_t ops = 10000;       // requests; items for bulk writes
  uint64_t keyspace = 0;      // random keys in [0, keyspace); 0: each client its own sequential range
  uint64_t key_base = 0;      // where sequential ranges start
  double read_fraction = -1;  // >= 0: a get with this probability, else a set (kind ignored)
  int bulk = 1000;            // items per bulk_set
  bool docs = false;          // values are generated text (for the searches)
  uint64_t value_size = 100;
  uint64_t dataset = 0;       // reported only
};

std::string KeyName(const std::string& prefix, uint64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%012llu", static_cast<unsigned long long>(i));
  return prefix + buf;
}

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

// A made-up vocabulary of pronounceable words, so documents share words
// with a Zipf-like skew and queries find something.
const std::vector<std::string>& Vocabulary() {
  static const std::vector<std::string> words = [] {
    const char* c = "bdfgklmnprstvz";
    const char* v = "aeiou";
    std::vector<std::string> w;
    for (uint64_t i = 0; w.size() < 3000; ++i) {
      std::string s;
      uint64_t h = Mix(i + 1);
      for (int k = 0; k < 2 + static_cast<int>(h % 2); ++k, h /= 70) {
        s += c[h % 14];
        s += v[(h / 14) % 5];
      }
      w.push_back(s);
    }
    return w;
  }();
  return words;
}

std::string DocWord(uint64_t doc, int j) {
  const auto& v = Vocabulary();
  // Squaring a uniform draw favours the first words, as natural text does.
  double u = static_cast<double>(Mix(doc * 64 + static_cast<uint64_t>(j)) % 1000000) / 1e6;
  return v[static_cast<size_t>(u * u * static_cast<double>(v.size()))];
}

std::string DocText(uint64_t doc, int words = 12) {
  std::string s;
  for (int j = 0; j < words; ++j) s += (j ? " " : "") + DocWord(doc, j);
  return s;
}

// One connection to a server under test, in its protocol. Requests are
// encoded into bytes and replies parsed from bytes, so that Measure can
// drive every connection from one event loop (as redis-benchmark does)
// while Exchange serves the blocking callers.
class Driver {
 public:
  explicit Driver(int fd) : fd_(fd) {}
  virtual ~Driver() { ::close(fd_); }
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  int fd() const { return fd_; }
  // Appends the requests for ops to out; false for an op this protocol has
  // no request for.
  virtual bool Encode(const Workload& w, const std::vector<Op>& ops, std::string* out) = 0;
  // Parses the complete reply at in[*pos...], if there is one: moves *pos
  // past it and says whether it is an error (a missing key is not) and
  // whether the op succeeded (for a get: was found). False: incomplete.
  virtual bool ParseReply(std::string_view in, size_t* pos, bool* error, bool* ok) = 0;

  // Sends one pipeline of ops and waits for their replies; counts error
  // replies and says per op whether it succeeded.
  bool Exchange(const Workload& w, const std::vector<Op>& ops, uint64_t* errors, std::vector<bool>* ok_each) {
    out_.clear();
    if (!Encode(w, ops, &out_)) return false;
    for (size_t off = 0; off < out_.size();) {
      ssize_t n = ::send(fd_, out_.data() + off, out_.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    if (ok_each) ok_each->clear();
    for (size_t i = 0; i < ops.size(); ++i) {
      bool error = false, ok = false;
      while (!ParseReply(in_, &pos_, &error, &ok)) {
        if (pos_ > 0) {
          in_.erase(0, pos_);
          pos_ = 0;
        }
        char buf[65536];
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) return false;
        in_.append(buf, static_cast<size_t>(n));
      }
      if (error) ++*errors;
      if (ok_each) ok_each->push_back(ok);
    }
    return true;
  }

 protected:
  const std::string& Value(uint64_t size) {
    if (value_.size() != size) value_.assign(size, 'v');
    return value_;
  }

 private:
  const int fd_;
  std::string value_, out_, in_;
  size_t pos_ = 0;
};

// A TCP connection to 127.0.0.1:port (or host:port), Nagle off and a long
// receive timeout (a 4 MiB value or a compaction stall is slow, not dead);
// -1 when it cannot connect.
int ConnectTcp(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || res == nullptr) return -1;
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{120, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// kvstore's NDJSON: a request line per op, a reply line each.
class KvDriver : public Driver {
 public:
  static std::unique_ptr<Driver> Connect(const std::string& host, int port) {
    int fd = ConnectTcp(host, port);
    if (fd < 0) return nullptr;
    return std::unique_ptr<Driver>(new KvDriver(fd));
  }
  bool Encode(const Workload& w, const std::vector<Op>& ops, std::string* out) override {
    for (const Op& op : ops) {
      *out += Line(w, op);
      *out += '\n';
    }
    return true;
  }
  bool ParseReply(std::string_view in, size_t* pos, bool* error, bool* ok) override {
    const size_t eol = in.find('\n', *pos);
    if (eol == std::string_view::npos) return false;
    const std::string_view line = in.substr(*pos, eol - *pos);
    *pos = eol + 1;
    *ok = line.find("\"ok\":true") != std::string_view::npos;
    *error = !*ok && line.find("not_found") == std::string_view::npos;
    return true;
  }

 private:
  explicit KvDriver(int fd) : Driver(fd) {}
  std::string Line(const Workload& w, const Op& op) {
    auto value = [&](uint64_t i) { return "\"" + (w.docs ? DocText(i) : Value(w.value_size)) + "\""; };
    switch (op.kind) {
      case Kind::kSet:
        return R"({"op":"set","key":")" + KeyName(w.prefix, op.key) + R"(","value":)" + value(op.key) + "}";
      case Kind::kGet:
        return R"({"op":"get","key":")" + KeyName(w.prefix, op.key) + "\"}";
      case Kind::kBulkSet: {
        std::string s = R"({"op":"bulk_set","items":[)";
        for (int i = 0; i < w.bulk; ++i) {
          if (i) s += ',';
          s += "[\"" + KeyName(w.prefix, op.key + static_cast<uint64_t>(i)) + "\"," + value(op.key + static_cast<uint64_t>(i)) + "]";
        }
        return s + "]}";
      }
      case Kind::kByValue:
        return R"({"op":"search_by_value","value":")" + DocText(op.key) + "\"}";
      case Kind::kFulltext:
        return R"({"op":"fulltext_search","query":")" + DocWord(op.key, 0) + " " + DocWord(op.key, 1) + "\"}";
      case Kind::kSemantic:
        return R"({"op":"semantic_search","k":10,"threshold":0.3,"query":")" + DocText(op.key, 4) + "\"}";
    }
    return {};
  }
};

// RESP: SET, GET and MSET, pipelined like kvstore's.
class RedisDriver : public Driver {
 public:
  static std::unique_ptr<Driver> Connect(int port) {
    int fd = ConnectTcp("127.0.0.1", port);
    if (fd < 0) return nullptr;
    return std::unique_ptr<Driver>(new RedisDriver(fd));
  }
  bool Encode(const Workload& w, const std::vector<Op>& ops, std::string* out) override {
    for (const Op& op : ops) {
      switch (op.kind) {
        case Kind::kSet:
          Command(out, {KeyName(w.prefix, op.key), Value(w.value_size)}, "SET");
          break;
        case Kind::kGet:
          Command(out, {KeyName(w.prefix, op.key)}, "GET");
          break;
        case Kind::kBulkSet: {
          std::vector<std::string> args;
          for (int i = 0; i < w.bulk; ++i) {
            args.push_back(KeyName(w.prefix, op.key + static_cast<uint64_t>(i)));
            args.push_back(Value(w.value_size));
          }
          Command(out, args, "MSET");
          break;
        }
        default:
          return false;  // no searches in Redis
      }
    }
    return true;
  }
  bool ParseReply(std::string_view in, size_t* pos, bool* error, bool* ok) override {
    char type = 0;
    bool nil = false;
    size_t p = *pos;
    if (!Reply(in, &p, &type, &nil)) return false;
    *pos = p;
    *error = type == '-';
    *ok = type != '-' && !nil;
    return true;
  }

 private:
  explicit RedisDriver(int fd) : Driver(fd) {}
  static void Command(std::string* out, const std::vector<std::string>& args, const char* name) {
    *out += "*" + std::to_string(args.size() + 1) + "\r\n$" + std::to_string(std::strlen(name)) + "\r\n" + name + "\r\n";
    for (const auto& a : args) {
      *out += "$" + std::to_string(a.size()) + "\r\n";
      *out += a;
      *out += "\r\n";
    }
  }
  // One reply (simple, error, integer, bulk; arrays are read through) at
  // in[*pos]; false when in does not hold all of it yet.
  static bool Reply(std::string_view in, size_t* pos, char* type, bool* nil) {
    const size_t eol = in.find("\r\n", *pos);
    if (eol == std::string_view::npos || eol == *pos) return false;
    *type = in[*pos];
    const std::string_view line = in.substr(*pos + 1, eol - *pos - 1);
    size_t p = eol + 2;
    if (*type == '$' || *type == '*') {
      const long long n = std::stoll(std::string(line));
      if (n < 0) {
        *nil = true;
      } else if (*type == '*') {
        for (long long i = 0; i < n; ++i) {
          char t;
          bool z;
          if (!Reply(in, &p, &t, &z)) return false;
        }
      } else {
        if (in.size() - p < static_cast<size_t>(n) + 2) return false;
        p += static_cast<size_t>(n) + 2;
      }
    }
    *pos = p;
    return true;
  }
};

// One system under test: how to connect, and (when the harness started it)
// how to kill it with -9 and start it again.
struct System {
  std::string name;
  std::function<std::unique_ptr<Driver>()> connect = {};
  std::function<bool()> crash_and_restart = {};  // empty: not ours to kill
  std::function<std::string()> notes = {};       // the server's own account of the run
  std::function<pid_t()> pid = {};                // the server process, when the harness started it
  bool searches = false;
};

std::string Label(const Workload& w) {
  return w.group + "/" + w.name + " (" + std::to_string(w.clients) + " clients" +
         (w.pipeline > 1 ? ", pipeline " + std::to_string(w.pipeline) : "") + ")";
}

// Runs w with its clients until the ops are done or max_seconds pass. One
// thread drives every connection through epoll, as redis-benchmark does:
// a thread per connection spent more CPU in the client (waking 50 threads,
// one per reply) than the servers spent answering, on a machine where the
// client and the server share two cores.
Record Measure(const System& sys, const Workload& w, double max_seconds) {
  const uint64_t per_client = std::max<uint64_t>(1, w.ops / static_cast<uint64_t>(w.clients));
  const uint64_t step = w.kind == Kind::kBulkSet ? static_cast<uint64_t>(w.bulk) : 1;
  struct Conn {
    std::unique_ptr<Driver> d;
    std::mt19937_64 rng;
    uint64_t first = 0, next = 0;  // ops [first, first + per_client), next to issue
    std::vector<Op> ops;           // the batch in flight
    uint64_t items = 0;            // its items (bulk_set: keys)
    std::string out, in;
    size_t out_off = 0, in_pos = 0, replies = 0;
    Clock::time_point t0;
    bool want_out = false, done = false;
  };
  Record r;
  std::vector<Conn> conns(static_cast<size_t>(w.clients));
  bool failed = false;
  for (int c = 0; c < w.clients && !failed; ++c) {
    Conn& k = conns[static_cast<size_t>(c)];
    k.d = sys.connect();
    if (!k.d) {
      failed = true;
      break;
    }
    k.rng.seed(Mix(static_cast<uint64_t>(c) + 7));
    k.first = w.key_base + per_client * static_cast<uint64_t>(c);
    ::fcntl(k.d->fd(), F_SETFL, ::fcntl(k.d->fd(), F_GETFL) | O_NONBLOCK);
  }
  Histogram all;
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  int live = 0;
  uint64_t progress = 0;
  // Connecting is not part of the measurement.
  const pid_t server_pid = sys.pid ? sys.pid() : -1;
  const double server_cpu_before = ProcessCpuSeconds(server_pid);
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(max_seconds));
  // Sends what k has to send; arms EPOLLOUT while the socket is full.
  auto flush = [&](Conn& k, int c) {
    while (k.out_off < k.out.size()) {
      ssize_t n = ::send(k.d->fd(), k.out.data() + k.out_off, k.out.size() - k.out_off, MSG_NOSIGNAL);
      if (n > 0) {
        k.out_off += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        return false;
      }
    }
    const bool want_out = k.out_off < k.out.size();
    if (want_out != k.want_out) {
      epoll_event ev{};
      ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0u);
      ev.data.u32 = static_cast<uint32_t>(c);
      ::epoll_ctl(ep, EPOLL_CTL_MOD, k.d->fd(), &ev);
      k.want_out = want_out;
    }
    return true;
  };
  // The next batch of k, or done.
  auto issue = [&](Conn& k, int c) {
    if (k.next >= per_client || Clock::now() >= deadline) {
      k.done = true;
      --live;
      return true;
    }
    k.ops.clear();
    k.items = 0;
    for (int p = 0; p < w.pipeline && k.next < per_client; ++p, k.next += step) {
      Kind kind = w.kind;
      if (w.read_fraction >= 0) {
        kind = static_cast<double>(k.rng() % 1000000) / 1e6 < w.read_fraction ? Kind::kGet : Kind::kSet;
      }
      const uint64_t key = w.keyspace > 0 ? k.rng() % w.keyspace : k.first + k.next;
      k.ops.push_back({kind, key});
      k.items += step;
    }
    k.out.clear();
    k.out_off = 0;
    k.replies = 0;
    if (!k.d->Encode(w, k.ops, &k.out)) return false;
    k.t0 = Clock::now();
    return flush(k, c);
  };
  for (int c = 0; c < w.clients && !failed; ++c) {
    Conn& k = conns[static_cast<size_t>(c)];
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(c);
    ::epoll_ctl(ep, EPOLL_CTL_ADD, k.d->fd(), &ev);
    ++live;
    if (!issue(k, c)) failed = true;
  }
  std::vector<epoll_event> events(static_cast<size_t>(std::max(1, w.clients)));
  const bool tty = isatty(2) != 0;
  Clock::time_point last_bar = start;
  const std::string label = sys.name + " " + Label(w);
  while (live > 0 && !failed) {
    // A stuck server (no reply for 120 s) fails the measurement rather than
    // hanging the suite.
    int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 120000);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      failed = true;
      break;
    }
    for (int e = 0; e < n && !failed; ++e) {
      const int c = static_cast<int>(events[static_cast<size_t>(e)].data.u32);
      Conn& k = conns[static_cast<size_t>(c)];
      if (k.done) continue;
      if ((events[static_cast<size_t>(e)].events & EPOLLOUT) != 0 && !flush(k, c)) {
        failed = true;
        break;
      }
      if ((events[static_cast<size_t>(e)].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) == 0) continue;
      char buf[65536];
      for (;;) {
        ssize_t got = ::recv(k.d->fd(), buf, sizeof buf, 0);
        if (got > 0) {
          k.in.append(buf, static_cast<size_t>(got));
          if (static_cast<size_t>(got) < sizeof buf) break;
        } else if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          break;
        } else if (got < 0 && errno == EINTR) {
          continue;
        } else {
          failed = true;  // the server closed the connection or failed
          break;
        }
      }
      if (failed) break;
      bool error = false, ok = false;
      while (k.replies < k.ops.size() && k.d->ParseReply(k.in, &k.in_pos, &error, &ok)) {
        if (error) r.errors++;
        if (k.ops[k.replies].kind == Kind::kGet && !ok) r.misses++;
        k.replies++;
      }
      if (k.in_pos > 0 && (k.in_pos == k.in.size() || k.in_pos > (1u << 20))) {
        k.in.erase(0, k.in_pos);
        k.in_pos = 0;
      }
      if (k.replies < k.ops.size()) continue;
      const auto ns = static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - k.t0).count());
      for (size_t i = 0; i < k.ops.size(); ++i) all.Record(ns);
      r.ops += k.items;
      progress += k.items;
      if (!issue(k, c)) failed = true;
    }
    if (tty && Clock::now() - last_bar > std::chrono::milliseconds(200)) {
      last_bar = Clock::now();
      const uint64_t total = per_client * static_cast<uint64_t>(w.clients);
      const double elapsed = std::chrono::duration<double>(last_bar - start).count();
      const double frac = std::min(1.0, std::max(static_cast<double>(progress) / static_cast<double>(total), elapsed / max_seconds));
      const int filled = static_cast<int>(frac * 30);
      std::fprintf(stderr, "\r  [%s%s] %3d%% %-60.60s", std::string(static_cast<size_t>(filled), '#').c_str(),
                   std::string(static_cast<size_t>(30 - filled), '.').c_str(), static_cast<int>(frac * 100), label.c_str());
    }
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double server_cpu_after = ProcessCpuSeconds(server_pid);
  if (server_cpu_before >= 0 && server_cpu_after >= 0 && r.ops > 0) {
    r.server_cpu_us = (server_cpu_after - server_cpu_before) * 1e6 / static_cast<double>(r.ops);
  }
  if (tty) std::fprintf(stderr, "\r%100s\r", "");
  ::close(ep);
  if (failed) r.errors++;
  r.system = sys.name;
  r.group = w.group;
  r.workload = w.name;
  r.dataset = w.dataset;
  r.clients = w.clients;
  r.pipeline = w.pipeline;
  r.value_size = w.docs || w.kind == Kind::kByValue || w.kind == Kind::kFulltext || w.kind == Kind::kSemantic ? 0 : w.value_size;
  r.ops_per_sec = r.seconds > 0 ? static_cast<double>(r.ops) / r.seconds : 0;
  r.mb_per_sec = r.ops_per_sec * static_cast<double>(r.value_size) / 1e6;
  r.p50_us = all.Percentile(0.5) / 1000;
  r.p90_us = all.Percentile(0.9) / 1000;
  r.p99_us = all.Percentile(0.99) / 1000;
  r.p999_us = all.Percentile(0.999) / 1000;
  r.max_us = static_cast<double>(all.max()) / 1000;
  return r;
}

// kill -9 under a durable write load, restart, and read back every
// acknowledged write.
Record CrashTest(const System& sys, int clients, double seconds) {
  Workload w;
  w.prefix = "crash";
  w.value_size = 100;
  std::vector<std::vector<uint64_t>> acked(static_cast<size_t>(clients));
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      std::unique_ptr<Driver> d;
      std::vector<bool> ok;
      uint64_t n = static_cast<uint64_t>(c) << 32, errors = 0;
      while (!stop) {
        if (!d && !(d = sys.connect())) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          continue;
        }
        std::vector<Op> ops;
        for (int p = 0; p < 4; ++p) ops.push_back({Kind::kSet, n++});
        if (!d->Exchange(w, ops, &errors, &ok)) {
          d.reset();
          continue;
        }
        for (size_t k = 0; k < ops.size(); ++k) {
          if (ok[k]) acked[static_cast<size_t>(c)].push_back(ops[k].key);
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  bool restarted = sys.crash_and_restart();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  stop = true;
  for (auto& t : threads) t.join();
  Record r;
  r.system = sys.name;
  r.group = "durability";
  r.workload = "kill -9 under load";
  r.clients = clients;
  r.value_size = 100;
  r.seconds = seconds;
  std::vector<uint64_t> all;
  for (auto& a : acked) all.insert(all.end(), a.begin(), a.end());
  r.acknowledged = all.size();
  std::unique_ptr<Driver> d = restarted ? sys.connect() : nullptr;
  std::vector<bool> ok;
  for (size_t i = 0; i < all.size(); i += 100) {
    std::vector<Op> ops;
    for (size_t k = i; k < std::min(all.size(), i + 100); ++k) ops.push_back({Kind::kGet, all[k]});
    uint64_t errors = 0;
    if (!d || !d->Exchange(w, ops, &errors, &ok)) {
      r.lost = all.size() - i;  // unreadable counts as lost
      r.errors++;
      break;
    }
    for (bool found : ok) r.lost += found ? 0 : 1;
  }
  return r;
}

std::string FmtRecord(const Record& r) {
  char buf[400];
  if (r.group == "durability") {
    std::snprintf(buf, sizeof buf, "%-8s durability kill -9 with %d writers: acknowledged %llu, lost %llu: %s",
                  r.system.c_str(), r.clients, static_cast<unsigned long long>(r.acknowledged),
                  static_cast<unsigned long long>(r.lost), r.lost == 0 && r.acknowledged > 0 ? "PASS" : "FAIL");
  } else {
    std::snprintf(buf, sizeof buf,
                  "%-8s %-10s %-14s keys %8llu clients %3d pipeline %2d value %8llu: %10.1f ops/s  p50 %9.1f us  p99 %9.1f us  errors %llu",
                  r.system.c_str(), r.group.c_str(), r.workload.c_str(), static_cast<unsigned long long>(r.dataset),
                  r.clients, r.pipeline, static_cast<unsigned long long>(r.value_size), r.ops_per_sec, r.p50_us,
                  r.p99_us, static_cast<unsigned long long>(r.errors));
  }
  return buf;
}

std::string Now(const char* format) {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, format, std::localtime(&t));
  return buf;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

class Suite {
 public:
  Suite(const SuiteOptions& o, std::string out) : o_(o), out_(std::move(out)), jsonl_(out_ + "/results.jsonl") {}

  uint64_t Scaled(uint64_t n, uint64_t min = 1) const {
    return std::max<uint64_t>(min, static_cast<uint64_t>(std::llround(static_cast<double>(n) * o_.scale)));
  }
  double MaxSeconds() const { return o_.max_seconds > 0 ? o_.max_seconds : (o_.quick ? 4 : 20); }

  void Add(const Record& r) {
    records_.push_back(r);
    jsonl_ << r.ToJson() << "\n";
    jsonl_.flush();
    std::printf("%s\n", FmtRecord(r).c_str());
    std::fflush(stdout);
  }
  bool Wants(const std::string& group) const {
    return o_.only.empty() || std::find(o_.only.begin(), o_.only.end(), group) != o_.only.end();
  }
  void Run(const System& sys, const Workload& w, bool record = true, double max_seconds = 0) {
    if (record && !Wants(w.group)) return;
    Record r = Measure(sys, w, max_seconds > 0 ? max_seconds : MaxSeconds() * (record ? 1 : 10));
    if (record) {
      Add(r);
    } else if (r.errors > 0) {
      std::fprintf(stderr, "%s: %llu errors while loading %s\n", sys.name.c_str(),
                   static_cast<unsigned long long>(r.errors), Label(w).c_str());
    }
  }

  // Every workload runs on each system in turn, before the next workload:
  // both see the machine in about the same state, so their ratio means
  // more than two passes minutes apart would. Who goes first alternates.
  void RunEach(const std::vector<const System*>& systems, const Workload& w, bool record = true,
               double max_seconds = 0) {
    const size_t n = systems.size();
    for (size_t i = 0; i < n; i++) Run(*systems[(i + turn_) % n], w, record, max_seconds);
    if (record) turn_++;
  }

  void RunAll(const std::vector<const System*>& systems) {
    // Single writes and reads at growing dataset sizes; each size loads
    // only the keys the previous one lacks.
    std::vector<uint64_t> sizes = o_.quick ? std::vector<uint64_t>{1000, 10000, 100000}
                                           : std::vector<uint64_t>{1000, 10000, 100000, 1000000};
    uint64_t loaded = 0, mixed_keys = 0;
    for (uint64_t n0 : sizes) {
      const uint64_t n = Scaled(n0, 10);
      if (n > loaded) {
        Workload load{.group = "load", .name = "bulk_set", .kind = Kind::kBulkSet, .clients = 4,
                      .ops = n - loaded, .key_base = loaded, .bulk = static_cast<int>(std::clamp<uint64_t>((n - loaded) / 4, 1, 1000))};
        RunEach(systems, load, false);
        loaded = n;
      }
      if (n0 <= 100000) mixed_keys = n;
      RunEach(systems, {.group = "dataset", .name = "set", .clients = 50, .ops = Scaled(o_.quick ? 5000 : 20000, 50),
                .keyspace = n, .dataset = n});
      RunEach(systems, {.group = "dataset", .name = "get", .kind = Kind::kGet, .clients = 50,
                .ops = Scaled(o_.quick ? 10000 : 50000, 50), .keyspace = n, .dataset = n});
    }
    // YCSB A (50% reads) and B (95% reads), uniform keys.
    RunEach(systems, {.group = "mixed", .name = "ycsb_a", .clients = 50, .ops = Scaled(o_.quick ? 10000 : 50000, 50),
              .keyspace = mixed_keys, .read_fraction = 0.5, .dataset = mixed_keys});
    RunEach(systems, {.group = "mixed", .name = "ycsb_b", .clients = 50, .ops = Scaled(o_.quick ? 10000 : 50000, 50),
              .keyspace = mixed_keys, .read_fraction = 0.95, .dataset = mixed_keys});
    // Bulk writes: items per second.
    for (int bulk : {1000, 100}) {
      RunEach(systems, {.group = "bulk", .name = "bulk_set_" + std::to_string(bulk), .prefix = "bulk", .kind = Kind::kBulkSet,
                .clients = 4, .ops = Scaled(o_.quick ? 50000 : 200000, static_cast<uint64_t>(bulk) * 4), .bulk = bulk});
    }
    // Pipelining (the shapes of issue 5's targets).
    RunEach(systems, {.group = "pipeline", .name = "set", .clients = 50, .pipeline = 16,
              .ops = Scaled(o_.quick ? 30000 : 100000, 800), .keyspace = mixed_keys, .dataset = mixed_keys});
    RunEach(systems, {.group = "pipeline", .name = "get", .kind = Kind::kGet, .clients = 50, .pipeline = 16,
              .ops = Scaled(o_.quick ? 30000 : 100000, 800), .keyspace = mixed_keys, .dataset = mixed_keys});
    // Throughput against concurrent clients.
    std::vector<int> clients = o_.quick ? std::vector<int>{1, 4, 16, 64, 256}
                                        : std::vector<int>{1, 2, 4, 8, 16, 32, 64, 128, 256};
    const double sweep_seconds = o_.max_seconds > 0 ? o_.max_seconds : (o_.quick ? 2 : 8);
    for (int c : clients) {
      const uint64_t ops = Scaled(static_cast<uint64_t>(c) * (o_.quick ? 200 : 1000), static_cast<uint64_t>(c) * 4);
      RunEach(systems, {.group = "clients", .name = "set", .clients = c, .ops = ops, .keyspace = mixed_keys, .dataset = mixed_keys},
          true, sweep_seconds);
      RunEach(systems, {.group = "clients", .name = "get", .kind = Kind::kGet, .clients = c, .ops = ops, .keyspace = mixed_keys,
                .dataset = mixed_keys},
          true, sweep_seconds);
    }
    // Large values: about the same bytes at each size.
    std::vector<uint64_t> value_sizes = o_.quick ? std::vector<uint64_t>{1 << 10, 64 << 10, 1 << 20, 4 << 20}
                                                 : std::vector<uint64_t>{1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20};
    const uint64_t bytes = o_.quick ? (32u << 20) : (256u << 20);
    for (uint64_t vs : value_sizes) {
      const uint64_t ops = Scaled(std::clamp<uint64_t>(bytes / vs, 16, 20000), 8);
      const std::string prefix = "large" + std::to_string(vs) + ":";
      // Every key is written (no time cap), so the gets below read values.
      RunEach(systems, {.group = "large", .name = "set", .prefix = prefix, .clients = 4, .ops = ops, .value_size = vs}, true,
          MaxSeconds() * 30);
      RunEach(systems, {.group = "large", .name = "get", .prefix = prefix, .kind = Kind::kGet, .clients = 4, .ops = ops,
                .keyspace = ops / 4 * 4, .value_size = vs});
    }
    // The three searches, over generated documents.
    std::vector<const System*> searchers;
    for (const System* sys : systems) {
      if (sys->searches) searchers.push_back(sys);
    }
    if (!searchers.empty() && Wants("search")) {
      const uint64_t docs = Scaled(o_.quick ? 5000 : 50000, 100);
      RunEach(searchers, {.group = "load", .name = "docs", .prefix = "doc", .kind = Kind::kBulkSet, .clients = 4, .ops = docs,
                .bulk = static_cast<int>(std::clamp<uint64_t>(docs / 4, 1, 500)), .docs = true},
          false);
      const uint64_t queries = Scaled(o_.quick ? 2000 : 10000, 40);
      for (auto [name, kind] : {std::pair{"search_by_value", Kind::kByValue}, std::pair{"fulltext_search", Kind::kFulltext},
                                std::pair{"semantic_search", Kind::kSemantic}}) {
        RunEach(searchers, {.group = "search", .name = name, .prefix = "doc", .kind = kind, .clients = 8, .ops = queries,
                  .keyspace = docs, .dataset = docs});
      }
    }
    for (const System* sys : systems) {
      // Before the crash test: a restart starts the server's counters afresh.
      if (sys->notes) notes_ += sys->notes();
      if (sys->crash_and_restart && Wants("durability")) Add(CrashTest(*sys, 16, o_.quick ? 1.0 : 3.0));
    }
  }

  const std::vector<Record>& records() const { return records_; }
  const std::string& notes() const { return notes_; }
  void AddNote(const std::string& note) { notes_ += note; }

 private:
  const SuiteOptions& o_;
  std::string out_;
  std::ofstream jsonl_;
  std::vector<Record> records_;
  std::string notes_;
  size_t turn_ = 0;
};

// The engine on its own, in this process, as `kvbench engine` runs it: the
// db_bench shapes without sync at one size, and durable random fills from 1,
// 8 and 64 threads; with --compare, RocksDB and LevelDB (and, for durable
// fills, a raw append + fdatasync file) with equal settings, in the same run.
// A benchmark of a group that failed outright: one record says so (its
// reasons went to stderr), so the report shows the gap.
void AddFailedRun(Suite* suite, const std::string& group) {
  Record r;
  r.system = "kvstore";
  r.group = group;
  r.workload = "error (see stderr)";
  r.errors = 1;
  suite->Add(r);
}

void RunEngineGroups(Suite* suite, const SuiteOptions& o, const std::string& dir) {
  std::vector<std::string> peers;
  if (o.compare) {
    for (const std::string& e : AvailableEngines()) {
      if (e != "kvstore") peers.push_back(e);
    }
  }
  std::string amplification;
  auto run = [&](EngineBenchOptions eo, const std::string& group, uint64_t dataset) {
    eo.db = dir;
    eo.on_result = [&](const EngineResult& e) {
      if (e.write_amp && e.space_amp) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "%s %.2f / %.2f, ", e.engine.c_str(), *e.write_amp, *e.space_amp);
        amplification += buf;
        return;  // a compaction's time is not a rate
      }
      Record r;
      r.system = e.engine;
      r.group = group;
      r.workload = e.workload;
      r.dataset = dataset;
      r.clients = e.threads;
      r.value_size = eo.value_size;
      r.ops = e.ops;
      r.seconds = e.seconds;
      r.ops_per_sec = e.ops_per_sec();
      r.p50_us = e.p50_us;
      r.p99_us = e.p99_us;
      suite->Add(r);
    };
    if (RunEngineBench(eo) != 0) AddFailedRun(suite, group);
  };
  if (suite->Wants("engine")) {
    EngineBenchOptions eo;
    eo.workloads = {"fillseq", "fillrandom", "overwrite", "compact", "readrandom", "readseq"};
    eo.num = suite->Scaled(o.quick ? 200000 : 1000000, 1000);
    eo.sync = false;
    for (const std::string& p : peers) {
      if (p != "raw") eo.compare.push_back(p);
    }
    run(eo, "engine", eo.num);
    if (!amplification.empty()) {
      amplification.resize(amplification.size() - 2);
      suite->AddNote("Engine write / space amplification after a full compaction (" + std::to_string(eo.num) +
                     " keys): " + amplification + ".\n");
    }
  }
  if (suite->Wants("engine_sync")) {
    for (int threads : {1, 8, 64}) {
      EngineBenchOptions eo;
      eo.workloads = {"fillrandom"};
      eo.num = suite->Scaled(static_cast<uint64_t>(o.quick ? 2000 : 5000) * static_cast<uint64_t>(threads == 1 ? 1 : threads / 2),
                             static_cast<uint64_t>(threads) * 4);
      eo.threads = threads;
      eo.sync = true;
      eo.compare = peers;
      run(eo, "engine_sync", 0);
    }
  }
}

// The 3-node cluster (`kvbench cluster`): durable replicated sets from 64
// clients and leader failover; with --compare, a 3-member etcd cluster with
// the same Raft timeouts beside it.
void RunClusterGroup(Suite* suite, const SuiteOptions& o) {
  ClusterBenchOptions co;
  co.systems = {"kvstore"};
  if (o.compare) {
    if (access(co.etcd.c_str(), X_OK) == 0) {
      co.systems.push_back("etcd");
    } else {
      std::fprintf(stderr, "kvbench suite: %s is not there: no etcd comparison\n", co.etcd.c_str());
    }
  }
  co.kvserver = o.kvserver;
  co.seconds = std::max(1.0, (o.quick ? 3.0 : 10.0) * o.scale);
  co.failover_trials = static_cast<int>(std::max<uint64_t>(1, suite->Scaled(o.quick ? 3 : 5)));
  std::string failover;
  co.on_result = [&](const ClusterResult& c) {
    Record r;
    r.system = c.system;
    r.group = "cluster";
    r.clients = c.clients;
    r.value_size = co.value_size;
    if (c.workload == "set") {
      r.workload = "set (3 nodes)";
      r.ops = c.ops;
      r.errors = c.errors;
      r.seconds = c.seconds;
      r.ops_per_sec = c.ops_per_sec;
      r.p50_us = c.p50_us;
      r.p99_us = c.p99_us;
      return suite->Add(r);
    }
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s median %.0f ms (max %.0f ms, %d trials%s%s), ", c.system.c_str(), c.median_ms,
                  c.max_ms, c.trials, c.failed_trials > 0 ? ", some without a new leader" : "",
                  c.lost > 0 ? ", ACKNOWLEDGED WRITES LOST" : "");
    failover += buf;
    if (c.failed_trials > 0 || c.lost > 0) {
      r.workload = "failover";
      r.errors = static_cast<uint64_t>(c.failed_trials) + static_cast<uint64_t>(std::max<int64_t>(c.lost, 0));
      suite->Add(r);
    }
  };
  if (RunClusterBench(co) != 0) AddFailedRun(suite, "cluster");
  if (!failover.empty()) {
    failover.resize(failover.size() - 2);
    suite->AddNote("Cluster failover, kill -9 of the leader to the first acknowledged write on the new one: " +
                   failover + ".\n");
  }
}

std::string RedisVersion() {
  FILE* p = popen("redis-server --version 2>/dev/null", "r");
  if (!p) return "";
  char buf[256] = {};
  size_t n = fread(buf, 1, sizeof buf - 1, p);
  pclose(p);
  std::string s(buf, n);
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

std::string ScaleText(double scale) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", scale);
  return buf;
}

// What the server says about itself after the run: flushes, compactions and
// write stalls explain outliers in the tables.
std::string ServerNotes(const std::string& address) {
  kvstore::net::ClientOptions co;
  co.addresses = {address};
  co.timeout_ms = 10000;
  kvstore::net::Client client(co);
  std::string response;
  if (!client.Call(R"({"op":"stats"})", &response).ok()) return "";
  auto r = nlohmann::json::parse(response, nullptr, false);
  if (r.is_discarded() || !r.value("ok", false)) return "";
  const auto& st = r["result"];
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "kvserver after its run: %lld keys, %lld flushes, %lld compactions, write amplification %.2f, "
                "%lld write stalls (%.1f s in all), block cache hits %lld / misses %lld.\n",
                st.value("keys", 0LL), st.value("flushes", 0LL), st.value("compactions", 0LL),
                st.value("write_amplification", 0.0), st.value("stall_count", 0LL),
                static_cast<double>(st.value("stall_micros", 0LL)) / 1e6, st.value("block_cache_hits", 0LL),
                st.value("block_cache_misses", 0LL));
  return buf;
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  return static_cast<bool>(f);
}

}  // namespace

int RunSuite(const SuiteOptions& o) {
  const std::string out = o.out.empty() ? "bench-results/" + Now("%Y%m%d-%H%M%S") : o.out;
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) {
    std::fprintf(stderr, "kvbench suite: cannot create %s: %s\n", out.c_str(), ec.message().c_str());
    return 1;
  }
  const std::string load_before = LoadAverage();
  const auto started = Clock::now();
  std::printf("kvbench suite (%s%s): results in %s\n", o.quick ? "quick" : "full",
              o.compare ? ", against redis, rocksdb, leveldb and etcd" : "", out.c_str());
  std::fflush(stdout);

  Suite suite(o, out);
  TempDir dir("kvbench-suite");
  std::string redis_version;
  // --only engine, engine_sync or cluster needs no server of its own.
  const bool server_groups = o.only.empty() || std::any_of(o.only.begin(), o.only.end(), [](const std::string& g) {
                               return !g.starts_with("engine") && g != "cluster";
                             });
  if (server_groups) {
    std::unique_ptr<ServerProcess> server;
    System kv{.name = "kvstore", .searches = true};
    std::string address = o.host + ":" + std::to_string(o.port);
    if (o.port == 0) {
      server = std::make_unique<ServerProcess>(o.kvserver, dir.path() + "/kvstore");
      if (dir.path().empty() || !server->Start()) {
        std::fprintf(stderr, "kvbench suite: could not start %s\n", o.kvserver.c_str());
        return 1;
      }
      address = server->address();
      kv.pid = [&server] { return server->pid(); };
      kv.crash_and_restart = [&server] {
        server->Stop(SIGKILL);
        return server->Start();
      };
    }
    const std::string kv_host = address.substr(0, address.rfind(':'));
    const int kv_port = std::atoi(address.substr(address.rfind(':') + 1).c_str());
    kv.connect = [kv_host, kv_port] { return KvDriver::Connect(kv_host, kv_port); };
    kv.notes = [address] { return ServerNotes(address); };
    std::vector<const System*> systems = {&kv};
    // Both servers run from the start: each workload goes to one, then the
    // other (Suite::RunEach).
    std::unique_ptr<RedisProcess> redis;
    System r{.name = "redis"};
    if (o.compare) {
      redis = std::make_unique<RedisProcess>(dir.path() + "/redis");
      if (!redis->Start()) {
        std::fprintf(stderr, "kvbench suite: could not start redis-server (is it installed?); no comparison\n");
      } else {
        redis_version = RedisVersion();
        const int port = redis->port();
        r.connect = [port] { return RedisDriver::Connect(port); };
        r.pid = [&redis] { return redis->pid(); };
        r.crash_and_restart = [&redis] {
          redis->Stop(SIGKILL);
          return redis->Start();
        };
        systems.push_back(&r);
      }
    }
    suite.RunAll(systems);
    if (server) server->Stop(SIGTERM);
    if (redis) redis->Stop(SIGTERM);
  }

  if (suite.Wants("engine") || suite.Wants("engine_sync")) RunEngineGroups(&suite, o, dir.path() + "/engines");
  if (suite.Wants("cluster")) RunClusterGroup(&suite, o);

  const double minutes = std::chrono::duration<double>(Clock::now() - started).count() / 60;
  char when[200];
  std::snprintf(when, sizeof when, "%.1f minutes", minutes);
  std::string header = "# kvbench suite, " + Now("%Y-%m-%d %H:%M") + "\n\n" + (o.quick ? "`--quick`" : "full run") +
                       (o.scale != 1.0 ? ", scale " + ScaleText(o.scale) : "") + ", " + when + ", " +
                       std::to_string(std::thread::hardware_concurrency()) +
                       " cores, load average " + load_before + " before and " + LoadAverage() +
                       " after (other work on the machine moves these figures).\n\n"
                       "kvserver with durable writes (fdatasync before every acknowledgement), 100-byte values "
                       "unless stated, uniform random keys; latencies are per request (a pipelined batch's "
                       "time counts for each request in it).";
  if (!redis_version.empty()) {
    header += " Peer: " + redis_version + " with `appendonly yes`, `appendfsync always`, the same workloads "
              "from the same client code (RESP instead of NDJSON), each workload on both servers in turn (who goes "
              "first alternates).";
  }
  if (std::any_of(suite.records().begin(), suite.records().end(),
                  [](const Record& r) { return r.group.starts_with("engine"); })) {
    header += " Groups engine and engine_sync: the embedded engine in kvbench's own process (`kvbench engine`), "
              "16-byte keys, threads in place of clients, and with --compare RocksDB and LevelDB beside it with "
              "equal settings (memtable, 4 KiB blocks, 10 bloom bits, block cache, LZ4; Snappy for LevelDB); "
              "`raw` appends each record to a file and calls fdatasync, the floor for a durable write.";
  }
  if (std::any_of(suite.records().begin(), suite.records().end(), [](const Record& r) { return r.group == "cluster"; })) {
    header += " Group cluster: three `kvserver --cluster` nodes on loopback (`kvbench cluster`), one durable "
              "replicated set in flight per client; with --compare, three etcd 3.4 members with the same Raft "
              "timeouts, written through their JSON gateway.";
  }
  header += "\n";
  if (!suite.notes().empty()) header += "\n" + suite.notes();
  const std::string md = MarkdownSummary(suite.records(), header);
  bool wrote = WriteFile(out + "/summary.md", md) && WriteFile(out + "/throughput_vs_clients.svg", ThroughputSvg(suite.records())) &&
               WriteFile(out + "/latency_percentiles.svg", LatencySvg(suite.records())) &&
               WriteFile(out + "/large_values.svg", LargeValuesSvg(suite.records()));
  std::printf("\n%s\nwrote %s/{results.jsonl,summary.md,throughput_vs_clients.svg,latency_percentiles.svg,large_values.svg}\n",
              md.c_str(), out.c_str());
  int code = wrote ? 0 : 1;
  for (const Record& r : suite.records()) {
    if (r.system != "kvstore") continue;
    if (r.errors > 0 || (r.group == "durability" && (r.lost > 0 || r.acknowledged == 0))) code = 1;
  }
  return code;
}

void AddSuiteCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<SuiteOptions>();
  CLI::App* cmd = app.add_subcommand("suite", "the whole end-to-end suite, with JSON lines, Markdown and SVG reports");
  cmd->add_option("--host", o->host, "with --port: a running kvserver instead of one started here")->capture_default_str();
  cmd->add_option("--port", o->port, "a running kvserver's port (0: start one; no crash test then)")->capture_default_str();
  cmd->add_option("--out", o->out, "results directory (default bench-results/<timestamp>)");
  cmd->add_flag("--quick", o->quick, "a short version (a few minutes), same outputs");
  cmd->add_flag("--compare", o->compare,
                "run the server workloads against redis-server too (appendfsync always), the engine ones against "
                "RocksDB and LevelDB, the cluster ones against etcd");
  cmd->add_option("--only", o->only,
                  "run only these groups: dataset, mixed, bulk, pipeline, clients, large, search, durability, engine, "
                  "engine_sync, cluster")
      ->delimiter(',')
      ->check(CLI::IsMember({"dataset", "mixed", "bulk", "pipeline", "clients", "large", "search", "durability", "engine",
                             "engine_sync", "cluster"}));
  cmd->add_option("--scale", o->scale, "multiply op counts and dataset sizes")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--max-seconds", o->max_seconds, "cap per measurement (0: 20, or 4 with --quick)")->capture_default_str();
#ifdef KVBENCH_KVSERVER_PATH
  o->kvserver = KVBENCH_KVSERVER_PATH;
#endif
  cmd->add_option("--kvserver", o->kvserver, "the kvserver binary")->capture_default_str();
  cmd->callback([o, exit_code] { *exit_code = RunSuite(*o); });
}

}  // namespace kvbench
