#include "bench/suite.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
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

// Sends one pipeline of ops; counts error responses (a missing key is not
// an error) and says per op whether it succeeded (for a get: was found).
class Driver {
 public:
  virtual ~Driver() = default;
  virtual bool Exchange(const Workload& w, const std::vector<Op>& ops, uint64_t* errors,
                        std::vector<bool>* ok_each) = 0;

 protected:
  const std::string& Value(uint64_t size) {
    if (value_.size() != size) value_.assign(size, 'v');
    return value_;
  }

 private:
  std::string value_;
};

class KvDriver : public Driver {
 public:
  explicit KvDriver(const std::string& address) : client_(Options(address)) {}
  bool Exchange(const Workload& w, const std::vector<Op>& ops, uint64_t* errors, std::vector<bool>* ok_each) override {
    requests_.clear();
    for (const Op& op : ops) requests_.push_back(Line(w, op));
    if (!client_.CallMany(requests_, &responses_).ok()) {
      client_.Close();
      return false;
    }
    if (ok_each) ok_each->clear();
    for (const std::string& r : responses_) {
      bool ok = r.find("\"ok\":true") != std::string::npos;
      if (!ok && r.find("not_found") == std::string::npos) ++*errors;
      if (ok_each) ok_each->push_back(ok);
    }
    return true;
  }

 private:
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
  static kvstore::net::ClientOptions Options(const std::string& address) {
    kvstore::net::ClientOptions o;
    o.addresses = {address};
    o.timeout_ms = 120000;  // a 4 MiB value or a compaction stall is slow, not dead
    return o;
  }
  kvstore::net::Client client_;
  std::vector<std::string> requests_, responses_;
};

// RESP over a plain socket: SET, GET and MSET, pipelined like kvstore's.
class RedisDriver : public Driver {
 public:
  static std::unique_ptr<Driver> Connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(fd);
      return nullptr;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{120, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return std::unique_ptr<Driver>(new RedisDriver(fd));
  }
  ~RedisDriver() override { close(fd_); }

  bool Exchange(const Workload& w, const std::vector<Op>& ops, uint64_t* errors, std::vector<bool>* ok_each) override {
    out_.clear();
    for (const Op& op : ops) {
      switch (op.kind) {
        case Kind::kSet:
          Command({"SET", KeyName(w.prefix, op.key), Value(w.value_size)});
          break;
        case Kind::kGet:
          Command({"GET", KeyName(w.prefix, op.key)});
          break;
        case Kind::kBulkSet: {
          std::vector<std::string> args = {"MSET"};
          for (int i = 0; i < w.bulk; ++i) {
            args.push_back(KeyName(w.prefix, op.key + static_cast<uint64_t>(i)));
            args.push_back(Value(w.value_size));
          }
          Command(args);
          break;
        }
        default:
          return false;  // no searches in Redis
      }
    }
    for (size_t off = 0; off < out_.size();) {
      ssize_t n = ::send(fd_, out_.data() + off, out_.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    if (ok_each) ok_each->clear();
    for (size_t i = 0; i < ops.size(); ++i) {
      char type;
      bool nil = false;
      if (!Reply(&type, &nil)) return false;
      if (type == '-') ++*errors;
      if (ok_each) ok_each->push_back(type != '-' && !nil);
    }
    return true;
  }

 private:
  explicit RedisDriver(int fd) : fd_(fd) {}
  void Command(const std::vector<std::string>& args) {
    out_ += "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) {
      out_ += "$" + std::to_string(a.size()) + "\r\n";
      out_ += a;
      out_ += "\r\n";
    }
  }
  bool Fill() {
    if (pos_ > 0) {
      in_.erase(0, pos_);
      pos_ = 0;
    }
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    in_.append(buf, static_cast<size_t>(n));
    return true;
  }
  bool ReadLine(std::string* line) {
    size_t eol;
    while ((eol = in_.find("\r\n", pos_)) == std::string::npos) {
      if (!Fill()) return false;
    }
    line->assign(in_, pos_, eol - pos_);
    pos_ = eol + 2;
    return true;
  }
  // One reply (simple, error, integer, bulk; arrays are read through).
  bool Reply(char* type, bool* nil) {
    std::string line;
    if (!ReadLine(&line) || line.empty()) return false;
    *type = line[0];
    if (*type == '$' || *type == '*') {
      long long n = std::stoll(line.substr(1));
      if (n < 0) {
        *nil = true;
        return true;
      }
      if (*type == '*') {
        for (long long i = 0; i < n; ++i) {
          char t;
          bool z;
          if (!Reply(&t, &z)) return false;
        }
        return true;
      }
      while (in_.size() - pos_ < static_cast<size_t>(n) + 2) {
        if (!Fill()) return false;
      }
      pos_ += static_cast<size_t>(n) + 2;
    }
    return true;
  }

  int fd_;
  std::string out_, in_;
  size_t pos_ = 0;
};

// One system under test: how to connect, and (when the harness started it)
// how to kill it with -9 and start it again.
struct System {
  std::string name;
  std::function<std::unique_ptr<Driver>()> connect = {};
  std::function<bool()> crash_and_restart = {};  // empty: not ours to kill
  std::function<std::string()> notes = {};       // the server's own account of the run
  bool searches = false;
};

std::string Label(const Workload& w) {
  return w.group + "/" + w.name + " (" + std::to_string(w.clients) + " clients" +
         (w.pipeline > 1 ? ", pipeline " + std::to_string(w.pipeline) : "") + ")";
}

// Runs w with its clients, each thread its own connection, until the ops
// are done or max_seconds pass.
Record Measure(const System& sys, const Workload& w, double max_seconds) {
  const uint64_t per_client = std::max<uint64_t>(1, w.ops / static_cast<uint64_t>(w.clients));
  std::vector<Histogram> hist(static_cast<size_t>(w.clients));
  std::vector<uint64_t> done(static_cast<size_t>(w.clients), 0), errors(static_cast<size_t>(w.clients), 0),
      misses(static_cast<size_t>(w.clients), 0);
  std::atomic<uint64_t> progress{0};
  std::atomic<bool> failed{false};
  std::latch go(w.clients + 1);
  Clock::time_point start, deadline;
  std::vector<std::thread> threads;
  for (int c = 0; c < w.clients; ++c) {
    threads.emplace_back([&, c] {
      std::unique_ptr<Driver> d = sys.connect();
      go.arrive_and_wait();
      if (!d) {
        failed = true;
        return;
      }
      std::mt19937_64 rng(Mix(static_cast<uint64_t>(c) + 7));
      const uint64_t first = w.key_base + per_client * static_cast<uint64_t>(c);
      const uint64_t step = w.kind == Kind::kBulkSet ? static_cast<uint64_t>(w.bulk) : 1;
      std::vector<Op> ops;
      std::vector<bool> ok;
      for (uint64_t i = 0; i < per_client && Clock::now() < deadline;) {
        ops.clear();
        uint64_t items = 0;
        for (int p = 0; p < w.pipeline && i < per_client; ++p, i += step) {
          Kind kind = w.kind;
          if (w.read_fraction >= 0) {
            kind = static_cast<double>(rng() % 1000000) / 1e6 < w.read_fraction ? Kind::kGet : Kind::kSet;
          }
          uint64_t key = w.keyspace > 0 ? rng() % w.keyspace : first + i;
          ops.push_back({kind, key});
          items += step;
        }
        auto t0 = Clock::now();
        if (!d->Exchange(w, ops, &errors[static_cast<size_t>(c)], &ok)) {
          failed = true;
          return;
        }
        auto ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
        for (size_t k = 0; k < ops.size(); ++k) hist[static_cast<size_t>(c)].Record(ns);
        for (size_t k = 0; k < ops.size(); ++k) {
          if (ops[k].kind == Kind::kGet && !ok[k]) misses[static_cast<size_t>(c)]++;
        }
        done[static_cast<size_t>(c)] += items;
        progress += items;
      }
    });
  }
  // Connecting is not part of the measurement. The clock starts before the
  // last arrival releases the clients, so none can start before it.
  start = Clock::now();
  deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(max_seconds));
  go.arrive_and_wait();
  std::atomic<bool> finished{false};
  std::thread bar;
  if (isatty(2)) {
    bar = std::thread([&] {
      const uint64_t total = per_client * static_cast<uint64_t>(w.clients);
      const std::string label = sys.name + " " + Label(w);
      while (!finished) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
        double frac = std::min(1.0, std::max(static_cast<double>(progress) / static_cast<double>(total), elapsed / max_seconds));
        int filled = static_cast<int>(frac * 30);
        std::fprintf(stderr, "\r  [%s%s] %3d%% %-60.60s", std::string(static_cast<size_t>(filled), '#').c_str(),
                     std::string(static_cast<size_t>(30 - filled), '.').c_str(), static_cast<int>(frac * 100), label.c_str());
      }
      std::fprintf(stderr, "\r%100s\r", "");
    });
  }
  for (auto& t : threads) t.join();
  Record r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  finished = true;
  if (bar.joinable()) bar.join();
  Histogram all;
  for (int c = 0; c < w.clients; ++c) {
    all.Merge(hist[static_cast<size_t>(c)]);
    r.ops += done[static_cast<size_t>(c)];
    r.errors += errors[static_cast<size_t>(c)];
    r.misses += misses[static_cast<size_t>(c)];
  }
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
      kv.crash_and_restart = [&server] {
        server->Stop(SIGKILL);
        return server->Start();
      };
    }
    kv.connect = [address]() -> std::unique_ptr<Driver> { return std::make_unique<KvDriver>(address); };
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
