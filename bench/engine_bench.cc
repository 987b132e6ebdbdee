// The workload runner behind `kvbench engine`.
//
// Like db_bench: keys are integers formatted as fixed-size zero-padded
// decimal (so byte order is numeric order and fillseq is really sequential);
// values are slices of a pre-generated buffer of pseudo-random bytes, about
// 50% compressible; every thread records each operation's latency in its own
// histogram, and the histograms are merged for p50/p99.
#include "bench/engine_bench.h"

#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <latch>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "bench/bench_engine.h"
#include "bench/histogram.h"
#include "kvstore/options.h"

namespace kvbench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

enum class Workload { kFillSeq, kFillRandom, kOverwrite, kReadRandom, kReadSeq, kCompact };

struct WorkloadInfo {
  const char* name;
  Workload kind;
  bool writes;
  bool fresh;  // starts from an empty store
};

constexpr WorkloadInfo kWorkloads[] = {
    {"fillseq", Workload::kFillSeq, true, true},
    {"fillrandom", Workload::kFillRandom, true, true},
    {"overwrite", Workload::kOverwrite, true, false},
    {"readrandom", Workload::kReadRandom, false, false},
    {"readseq", Workload::kReadSeq, false, false},
    // Compacts everything (one timed operation), then reports space and
    // write amplification: bytes on disk over live bytes, and bytes the
    // process wrote to disk since the store was filled over bytes written.
    {"compact", Workload::kCompact, false, false},
};

const WorkloadInfo* FindWorkload(std::string_view name) {
  for (const WorkloadInfo& w : kWorkloads) {
    if (name == w.name) return &w;
  }
  return nullptr;
}

// xorshift64*: fast, and good enough to pick keys.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(Mix(seed) | 1) {}
  uint64_t Next() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 0x2545F4914F6CDD1DULL;
  }
  // Uniform in [0, n).
  uint64_t Uniform(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }
  static uint64_t Mix(uint64_t x) {  // splitmix64 finalizer
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
  }

 private:
  uint64_t state_;
};

size_t DecimalDigits(uint64_t v) {
  size_t d = 1;
  while (v >= 10) {
    v /= 10;
    d++;
  }
  return d;
}

// Writes k as key_size zero-padded decimal digits into buf.
void FormatKey(uint64_t k, char* buf, size_t key_size) {
  for (size_t i = key_size; i > 0; i--) {
    buf[i - 1] = static_cast<char>('0' + k % 10);
    k /= 10;
  }
}

// db_bench's value source: a buffer of pieces that are half random printable
// bytes and half a repeat of them, handed out value_size bytes at a time.
class ValueSource {
 public:
  ValueSource(size_t value_size, uint64_t seed) : value_size_(value_size) {
    Random rnd(seed);
    const size_t size = std::max<size_t>(1 << 20, 2 * value_size);
    data_.reserve(size + 100);
    while (data_.size() < size) {
      char piece[100];
      for (int i = 0; i < 50; i++) piece[i] = static_cast<char>(' ' + rnd.Uniform(95));
      std::memcpy(piece + 50, piece, 50);
      data_.append(piece, sizeof(piece));
    }
  }
  // Thread-local cursor into the shared buffer.
  struct Cursor {
    size_t pos = 0;
  };
  Cursor Start(int thread) const {
    return Cursor{(static_cast<size_t>(thread) * 7919 * 100) % (data_.size() - value_size_)};
  }
  std::string_view Next(Cursor* c) const {
    if (c->pos + value_size_ > data_.size()) c->pos = 0;
    std::string_view v(data_.data() + c->pos, value_size_);
    c->pos += value_size_;
    return v;
  }

 private:
  size_t value_size_;
  std::string data_;
};

using Result = EngineResult;

class Printer {
 public:
  Printer(bool json, bool show_run, std::function<void(const EngineResult&)> sink)
      : json_(json), show_run_(show_run), sink_(std::move(sink)) {}

  void Print(const Result& r) {
    if (sink_) return sink_(r);
    const double ops_per_sec = r.ops_per_sec();
    if (json_) {
      std::printf(
          "{\"engine\":\"%s\",\"workload\":\"%s\",\"threads\":%d,\"sync\":%s,\"ops\":%llu,"
          "\"seconds\":%.6f,\"ops_per_sec\":%.1f,\"p50_us\":%.3f,\"p99_us\":%.3f",
          r.engine.c_str(), r.workload.c_str(), r.threads, r.sync ? "true" : "false",
          static_cast<unsigned long long>(r.ops), r.seconds, ops_per_sec, r.p50_us, r.p99_us);
      if (r.found) std::printf(",\"found\":%llu", static_cast<unsigned long long>(*r.found));
      if (r.write_amp) std::printf(",\"write_amp\":%.3f", *r.write_amp);
      if (r.space_amp) std::printf(",\"space_amp\":%.3f", *r.space_amp);
      if (show_run_) std::printf(",\"run\":%d", r.run);
      std::printf("}\n");
    } else {
      if (!header_done_) {
        if (show_run_) std::printf("%-4s ", "run");
        std::printf("%-8s %-11s %7s %-5s %10s %9s %12s %10s %10s %10s\n", "engine", "workload",
                    "threads", "sync", "ops", "seconds", "ops/sec", "p50 us", "p99 us", "found");
        header_done_ = true;
      }
      if (show_run_) std::printf("%-4d ", r.run);
      char found[32] = "-";
      if (r.found) std::snprintf(found, sizeof(found), "%llu", static_cast<unsigned long long>(*r.found));
      std::printf("%-8s %-11s %7d %-5s %10llu %9.3f %12.1f %10.2f %10.2f %10s\n", r.engine.c_str(),
                  r.workload.c_str(), r.threads, r.sync ? "true" : "false",
                  static_cast<unsigned long long>(r.ops), r.seconds, ops_per_sec, r.p50_us,
                  r.p99_us, found);
      if (r.write_amp && r.space_amp) {
        std::printf("# %s after compact: write amplification %.2f, space amplification %.2f\n",
                    r.engine.c_str(), *r.write_amp, *r.space_amp);
      }
    }
    std::fflush(stdout);
  }

 private:
  bool json_;
  bool show_run_;
  std::function<void(const EngineResult&)> sink_;
  bool header_done_ = false;
};

// The first error any thread hits; the others stop soon after.
class ErrorSlot {
 public:
  void Set(std::string message) {
    std::lock_guard lock(mu_);
    if (!failed_.load(std::memory_order_relaxed)) message_ = std::move(message);
    failed_.store(true, std::memory_order_relaxed);
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  const std::string& message() const { return message_; }

 private:
  std::mutex mu_;
  std::atomic<bool> failed_{false};
  std::string message_;
};

class Runner {
 public:
  Runner(const EngineBenchOptions& options, const ValueSource& values)
      : opt_(options), values_(values) {}

  // Runs one workload on an open engine; false (with *error set) on failure.
  bool RunWorkload(BenchEngine* engine, const WorkloadInfo& w, Result* result,
                   std::string* error) {
    if (w.kind == Workload::kCompact) return RunCompact(engine, w, result, error);
    const int threads = opt_.threads;
    std::vector<Histogram> hists(threads);
    std::vector<uint64_t> ops(threads, 0), found(threads, 0);
    ErrorSlot err;
    std::latch ready(threads);
    std::latch go(1);
    std::vector<std::thread> workers;
    workers.reserve(threads);
    // Each thread does num/threads operations; the first num%threads do one more.
    uint64_t begin = 0;
    for (int t = 0; t < threads; t++) {
      const uint64_t n = opt_.num / threads + (static_cast<uint64_t>(t) < opt_.num % threads);
      workers.emplace_back([&, t, begin, n] {
        ready.count_down();
        go.wait();
        Work(engine, w, t, begin, n, &hists[t], &ops[t], &found[t], &err);
      });
      begin += n;
    }
    ready.wait();
    const Clock::time_point start = Clock::now();
    go.count_down();
    for (std::thread& th : workers) th.join();
    const Clock::time_point end = Clock::now();

    if (err.failed()) {
      *error = err.message();
      return false;
    }
    Histogram all;
    for (const Histogram& h : hists) all.Merge(h);
    result->engine = engine->name();
    result->workload = w.name;
    result->threads = threads;
    result->sync = opt_.sync;
    for (uint64_t o : ops) result->ops += o;
    result->seconds = std::chrono::duration<double>(end - start).count();
    result->p50_us = all.Percentile(0.50) / 1000.0;
    result->p99_us = all.Percentile(0.99) / 1000.0;
    if (w.kind == Workload::kReadRandom) {
      uint64_t f = 0;
      for (uint64_t x : found) f += x;
      result->found = f;
    }
    return true;
  }

  // Where amplification is measured from: called when a store starts empty.
  void MarkFresh(const std::string& dir) {
    dir_ = dir;
    disk_writes_at_fresh_ = ProcessDiskWrites();
    user_bytes_since_fresh_ = 0;
  }
  void CountUserWrites(uint64_t ops) { user_bytes_since_fresh_ += ops * (opt_.key_size + opt_.value_size); }

 private:
  bool RunCompact(BenchEngine* engine, const WorkloadInfo& w, Result* result, std::string* error) {
    const Clock::time_point start = Clock::now();
    BenchStatus s = engine->CompactAll();
    const Clock::time_point end = Clock::now();
    if (!s.ok()) {
      *error = std::string(engine->name()) + " compact: " + s.message();
      return false;
    }
    // Untimed: count the live keys for the space amplification.
    uint64_t live = 0;
    std::unique_ptr<BenchIterator> it = engine->NewIterator(0);
    for (it->SeekToFirst(); it->Valid(); it->Next()) live++;
    if (!it->status().ok()) {
      *error = std::string(engine->name()) + " compact scan: " + it->status().message();
      return false;
    }
    const double live_bytes = static_cast<double>(live) * static_cast<double>(opt_.key_size + opt_.value_size);
    result->engine = engine->name();
    result->workload = w.name;
    result->threads = 1;
    result->sync = opt_.sync;
    result->ops = 1;
    result->seconds = std::chrono::duration<double>(end - start).count();
    result->p50_us = result->p99_us = result->seconds * 1e6;
    result->found = live;
    if (live_bytes > 0) result->space_amp = static_cast<double>(DiskBytes(dir_)) / live_bytes;
    if (user_bytes_since_fresh_ > 0) {
      result->write_amp = static_cast<double>(ProcessDiskWrites() - disk_writes_at_fresh_) /
                          static_cast<double>(user_bytes_since_fresh_);
    }
    return true;
  }

  // Bytes this process caused to be written to storage (/proc/self/io):
  // WAL, flushes and compactions alike, whichever engine did them.
  static uint64_t ProcessDiskWrites() {
    std::FILE* f = std::fopen("/proc/self/io", "r");
    if (f == nullptr) return 0;
    char line[128];
    unsigned long long v = 0;
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      if (std::sscanf(line, "write_bytes: %llu", &v) == 1) break;
    }
    std::fclose(f);
    return v;
  }
  static uint64_t DiskBytes(const std::string& dir) {
    uint64_t total = 0;
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
      if (e.is_regular_file(ec)) total += e.file_size(ec);
    }
    return total;
  }

  std::string dir_;
  uint64_t disk_writes_at_fresh_ = 0;
  uint64_t user_bytes_since_fresh_ = 0;

  static uint64_t Nanos(Clock::time_point a, Clock::time_point b) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
  }

  void Work(BenchEngine* engine, const WorkloadInfo& w, int t, uint64_t begin, uint64_t n,
            Histogram* hist, uint64_t* ops, uint64_t* found, ErrorSlot* err) {
    const size_t key_size = opt_.key_size;
    std::string key_buf(key_size, '0');
    const std::string_view key(key_buf);
    Random rnd(opt_.seed ^ Random::Mix(static_cast<uint64_t>(t) * 1000 + static_cast<int>(w.kind)));
    ValueSource::Cursor cursor = values_.Start(t);
    std::string value;
    auto fail = [&](const BenchStatus& s) {
      err->Set(std::string(engine->name()) + " " + w.name + ": " + s.message());
    };

    if (w.kind == Workload::kReadSeq) {
      std::unique_ptr<BenchIterator> it = engine->NewIterator(t);
      uint64_t bytes = 0;  // touch every key and value, as db_bench does
      Clock::time_point prev = Clock::now();
      it->SeekToFirst();
      while (it->Valid()) {
        bytes += it->key().size() + it->value().size();
        it->Next();
        const Clock::time_point now = Clock::now();
        hist->Record(Nanos(prev, now));
        prev = now;
        ++*ops;
        if ((*ops & 1023) == 0 && err->failed()) return;
      }
      BenchStatus s = it->status();
      if (!s.ok()) fail(s);
      bytes_read_.fetch_add(bytes, std::memory_order_relaxed);
      return;
    }

    for (uint64_t i = 0; i < n; i++) {
      uint64_t k;
      switch (w.kind) {
        case Workload::kFillSeq:
          k = begin + i;
          break;
        default:
          k = rnd.Uniform(opt_.num);
          break;
      }
      FormatKey(k, key_buf.data(), key_size);
      BenchStatus s;
      Clock::time_point t0, t1;
      if (w.writes) {
        const std::string_view v = values_.Next(&cursor);
        t0 = Clock::now();
        s = engine->Put(t, key, v);
        t1 = Clock::now();
      } else {
        bool hit = false;
        t0 = Clock::now();
        s = engine->Get(t, key, &value, &hit);
        t1 = Clock::now();
        if (s.ok() && hit) {
          ++*found;
          if (value.size() != opt_.value_size) {
            s = BenchStatus::Error("key " + key_buf + " has a value of " +
                                   std::to_string(value.size()) + " bytes, expected " +
                                   std::to_string(opt_.value_size));
          }
        }
      }
      if (!s.ok()) {
        fail(s);
        return;
      }
      hist->Record(Nanos(t0, t1));
      ++*ops;
      if ((i & 255) == 255 && err->failed()) return;
    }
  }

  const EngineBenchOptions& opt_;
  const ValueSource& values_;
  std::atomic<uint64_t> bytes_read_{0};  // readseq; only so the reads are used
};

// Empties dir (creating it if needed), like db_bench's fresh database.
bool ResetDir(const std::string& dir, std::string* error) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (!ec) fs::create_directories(dir, ec);
  if (ec) {
    *error = "cannot empty " + dir + ": " + ec.message();
    return false;
  }
  return true;
}

bool EnsureDir(const std::string& dir, std::string* error) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    *error = "cannot create " + dir + ": " + ec.message();
    return false;
  }
  return true;
}

// Runs the workload list on one engine in <root>/<engine>.
bool RunEngine(const EngineBenchOptions& opt, const std::string& root, const std::string& name,
               int run, Runner* runner, Printer* printer, std::string* error) {
  std::unique_ptr<BenchEngine> engine = MakeEngine(name, error);
  if (engine == nullptr) return false;
  EngineConfig config;
  config.dir = root + "/" + name;
  config.sync = opt.sync;
  config.write_buffer_size = opt.write_buffer_size;
  config.threads = opt.threads;

  bool open = false;
  auto close = [&]() -> bool {
    if (!open) return true;
    open = false;
    BenchStatus s = engine->Close();
    if (!s.ok()) *error = name + " close: " + s.message();
    return s.ok();
  };
  for (const std::string& wname : opt.workloads) {
    const WorkloadInfo& w = *FindWorkload(wname);
    if (!w.writes && !engine->SupportsReads()) continue;  // raw: writes only
    if (w.kind == Workload::kCompact && !engine->SupportsReads()) continue;
    if (w.fresh) {
      if (!close() || !ResetDir(config.dir, error)) return false;
      runner->MarkFresh(config.dir);
    } else if (!open && !EnsureDir(config.dir, error)) {
      return false;
    }
    if (!open) {
      BenchStatus s = engine->Open(config);
      if (!s.ok()) {
        *error = name + " open " + config.dir + ": " + s.message();
        return false;
      }
      open = true;
    }
    Result result;
    if (!runner->RunWorkload(engine.get(), w, &result, error)) {
      (void)close();
      return false;
    }
    if (w.writes) runner->CountUserWrites(result.ops);
    result.run = run;
    printer->Print(result);
  }
  return close();
}

// A directory under /tmp made for this run, removed at exit.
class TempDir {
 public:
  bool Create(std::string* error) {
    char tmpl[] = "/tmp/kvbench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      *error = std::string("mkdtemp /tmp/kvbench-XXXXXX: ") + std::strerror(errno);
      return false;
    }
    path_ = tmpl;
    return true;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

int RunEngineBench(const EngineBenchOptions& in) {
  EngineBenchOptions opt = in;
  auto die = [](const std::string& message) {
    std::fprintf(stderr, "kvbench engine: error: %s\n", message.c_str());
    return 1;
  };
  if (opt.write_buffer_size == 0) opt.write_buffer_size = kvstore::Options{}.memtable_budget;
  if (opt.num == 0) return die("--num must be at least 1");
  if (opt.threads < 1) return die("--threads must be at least 1");
  if (opt.repeat < 1) return die("--repeat must be at least 1");
  if (opt.key_size < 1 || opt.key_size > kvstore::kMaxKeySize) return die("bad --key-size");
  if (opt.value_size > kvstore::kMaxValueSize) return die("bad --value-size");
  if (DecimalDigits(opt.num - 1) > opt.key_size) {
    return die("--key-size " + std::to_string(opt.key_size) + " is too small for " +
               std::to_string(opt.num) + " distinct decimal keys");
  }
  for (const std::string& w : opt.workloads) {
    if (FindWorkload(w) == nullptr) return die("unknown workload '" + w + "'");
  }

  // kvstore first, then each named peer once.
  std::vector<std::string> engines = {"kvstore"};
  for (const std::string& name : opt.compare) {
    std::string error;
    if (MakeEngine(name, &error) == nullptr) return die(error);
    if (std::find(engines.begin(), engines.end(), name) == engines.end()) engines.push_back(name);
  }

  TempDir temp;
  std::string root = opt.db;
  std::string error;
  if (root.empty()) {
    if (!temp.Create(&error)) return die(error);
    root = temp.path();
  } else if (!EnsureDir(root, &error)) {
    return die(error);
  }

  const ValueSource values(opt.value_size, opt.seed);
  Runner runner(opt, values);
  Printer printer(opt.json, opt.repeat > 1, opt.on_result);
  if (!opt.json && !opt.on_result) {
    std::printf("# kvbench engine: %llu ops, %zu-byte keys, %zu-byte values (~50%% compressible), "
                "write buffer %zu bytes, %s, db %s\n",
                static_cast<unsigned long long>(opt.num), opt.key_size, opt.value_size,
                opt.write_buffer_size, opt.sync ? "sync" : "no-sync", root.c_str());
  }
  for (int run = 0; run < opt.repeat; run++) {
    // Run r starts with engine r (mod the count), so no engine always goes
    // first (cold caches) or last (a disk still busy with earlier writeback).
    std::vector<std::string> order = engines;
    std::rotate(order.begin(), order.begin() + run % order.size(), order.end());
    for (const std::string& name : order) {
      if (!RunEngine(opt, root, name, run, &runner, &printer, &error)) return die(error);
    }
  }
  return 0;
}

}  // namespace kvbench
