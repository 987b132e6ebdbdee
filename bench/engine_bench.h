// `kvbench engine`: db_bench-style workloads against kvstore and, for
// comparison, RocksDB, LevelDB and a raw append-only file, in one process
// with equal settings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace kvbench {

// One workload measured on one engine.
struct EngineResult {
  std::string engine;
  std::string workload;
  int threads = 0;
  bool sync = false;
  uint64_t ops = 0;
  double seconds = 0;
  double p50_us = 0;
  double p99_us = 0;
  std::optional<uint64_t> found;    // readrandom: keys found; compact: live keys
  std::optional<double> write_amp;  // compact only
  std::optional<double> space_amp;  // compact only
  int run = 0;

  double ops_per_sec() const { return seconds > 0 ? static_cast<double>(ops) / seconds : 0.0; }
};

struct EngineBenchOptions {
  // Parent directory; each engine gets <db>/<engine>. Empty: a fresh
  // directory under /tmp, removed when kvbench exits.
  std::string db;
  // Run in order on the same database, as in db_bench:
  //   fillseq     empty store; thread t puts its own contiguous key range in order
  //   fillrandom  empty store; keys uniform in [0, num) with replacement, so
  //               about 63% of them end up present
  //   overwrite   puts of random keys in [0, num) on the existing store
  //   readrandom  gets of random keys in [0, num); reports how many were found
  //   readseq     each thread scans the whole store once; ops = entries read
  std::vector<std::string> workloads = {"fillrandom"};
  uint64_t num = 100000;  // total operations, split across the threads
  size_t key_size = 16;
  size_t value_size = 100;
  int threads = 1;
  bool sync = true;
  bool json = false;
  // Engines run after kvstore: any of rocksdb, leveldb, raw.
  std::vector<std::string> compare;
  int repeat = 1;  // whole comparisons; run r starts with the r-th engine
  size_t write_buffer_size = 0;  // 0: kvstore's default memtable budget
  uint64_t seed = 301;
  // When set, every result goes here instead of to stdout (the suite
  // collects them into its own report).
  std::function<void(const EngineResult&)> on_result;
};

// Runs the benchmark, printing results to stdout and errors to stderr.
// Returns the process exit code: 0, or 1 after any engine error.
int RunEngineBench(const EngineBenchOptions& options);

// Registers the `engine` subcommand on app. When it is the one parsed, its
// callback runs the benchmark and stores the exit code in *exit_code.
void AddEngineCommand(CLI::App& app, int* exit_code);

}  // namespace kvbench
