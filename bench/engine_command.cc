// The command line of `kvbench engine`.
#include <CLI/CLI.hpp>

#include "bench/bench_engine.h"
#include "bench/engine_bench.h"

namespace kvbench {

void AddEngineCommand(CLI::App& app, int* exit_code) {
  auto options = std::make_shared<EngineBenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "engine",
      "db_bench-style workloads on kvstore, optionally compared with RocksDB, LevelDB and a raw "
      "append-only file in the same process with equal settings");

  std::string engines;
  for (const std::string& e : AvailableEngines()) {
    if (e != "kvstore") engines += (engines.empty() ? "" : ",") + e;
  }

  cmd->add_option("--db", options->db,
                  "Parent directory; each engine uses DIR/<engine> (fill workloads empty it "
                  "first). Default: a fresh /tmp/kvbench-XXXXXX, removed afterwards");
  cmd->add_option("--workload", options->workloads,
                  "Comma-separated list run in order on the same database: fillseq, fillrandom "
                  "(both start empty), overwrite, readrandom, readseq, compact (compacts "
                  "everything, then reports write and space amplification)")
      ->delimiter(',')
      ->check(CLI::IsMember({"fillseq", "fillrandom", "overwrite", "readrandom", "readseq", "compact"}))
      ->capture_default_str();
  cmd->add_option("--num", options->num,
                  "Total operations across the threads (readseq: each thread scans the whole "
                  "database once)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--key-size", options->key_size, "Key bytes (zero-padded decimal)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--value-size", options->value_size, "Value bytes")->capture_default_str();
  cmd->add_option("--threads", options->threads, "Client threads")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--sync,!--no-sync", options->sync,
                "Durable writes (fdatasync before acknowledging; the default) or not");
  cmd->add_flag("--json", options->json, "One JSON object per line per workload per engine");
  cmd->add_option("--compare", options->compare,
                  "Comma-separated engines to run after kvstore (this build has: " + engines + ")")
      ->delimiter(',');
  cmd->add_option("--repeat", options->repeat,
                  "Repeat the whole comparison, rotating which engine goes first")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--write-buffer-size", options->write_buffer_size,
                  "Memtable bytes for every engine (default: kvstore's Options::memtable_budget)");
  cmd->add_option("--seed", options->seed, "Seed for keys and values")->capture_default_str();

  cmd->callback([options, exit_code] { *exit_code = RunEngineBench(*options); });
}

}  // namespace kvbench
