// `kvbench suite` (`./kv bench` with no subcommand): the whole end-to-end
// suite against a kvserver it starts (or --host/--port): single writes and
// reads at growing dataset sizes, bulk writes, YCSB A and B mixes, 1 to 256
// clients, pipelining, large values, the three searches and a kill -9
// durability test; with --compare the server workloads also run against a
// redis-server it starts (appendonly yes, appendfsync always). Results go to
// a directory: results.jsonl, summary.md and SVG charts.
#pragma once

#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace kvbench {

struct SuiteOptions {
  std::string host = "127.0.0.1";
  int port = 0;           // 0: start a kvserver in a temporary directory
  std::string out;        // default bench-results/<timestamp>
  bool quick = false;     // a few minutes instead of the full run
  bool compare = false;   // also against redis-server
  double scale = 1.0;     // multiplies op counts and dataset sizes (the ctest smoke run uses a tiny one)
  double max_seconds = 0; // per measurement; 0: 20 (full) or 4 (quick)
  std::vector<std::string> only;  // groups to run; empty: all (datasets are loaded anyway)
  std::string kvserver;
};

int RunSuite(const SuiteOptions& options);
void AddSuiteCommand(CLI::App& app, int* exit_code);

}  // namespace kvbench
