// `kvbench server`: load on a running kvserver over its NDJSON protocol
// (or one it spawns itself with --spawn), the way redis-benchmark loads
// Redis: C client connections, each pipelining D requests at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace kvbench {

struct ServerBenchOptions {
  std::string host = "127.0.0.1";
  int port = 9000;
  // Run in order:
  //   set       durable sets of keys [0, num) (each client its own range)
  //   get       gets of the keys set writes (run set first to find them)
  //   mixed     half gets, half sets, interleaved
  //   bulk_set  bulk_set requests of bulk_size items; ops = items
  std::vector<std::string> workloads = {"set", "get"};
  int clients = 50;
  int pipeline = 1;
  uint64_t num = 100000;
  size_t value_size = 100;
  size_t bulk_size = 1000;
  bool json = false;
  // Start a kvserver (this path) on a free port in a temporary directory,
  // and stop it afterwards; empty: use --host/--port.
  bool spawn = false;
  std::string kvserver;
};

int RunServerBench(const ServerBenchOptions& options);
void AddServerCommand(CLI::App& app, int* exit_code);

}  // namespace kvbench
