// `kvbench acid`: the ACID suite against a kvserver (or a 3-node cluster)
// that it starts, kills with -9 and restarts itself. Four tests, each
// printing PASS or FAIL with its counts; any loss fails the run (exit 1).
//
//   atomicity    bulk_set and txn batches of many keys while the server (in a
//                cluster: the leader) is killed again and again; after each
//                restart every batch is wholly present or wholly absent, and
//                every acknowledged batch is present.
//   durability   every acknowledged set survives every kill -9.
//   consistency  transfer txns between accounts keep the total, at every read
//                during the load and after every crash.
//   isolation    (no crashes) readers never see part of a batch through
//                bulk_get or scan; concurrent cas-increment loops end at
//                exactly the number of increments acknowledged.
#pragma once

#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace kvbench {

struct AcidOptions {
  bool cluster = false;
  int cycles = 10;                // kill -9 cycles for atomicity, durability, consistency
  int min_run_ms = 200;           // load before each kill, chosen in [min, max]
  int max_run_ms = 700;
  double isolation_seconds = 5;   // the isolation phase
  int batch_keys = 50;            // keys per bulk_set / txn batch
  int accounts = 20;
  uint64_t seed = 0;              // 0: random (printed)
  bool keep = false;              // keep the data directories (printed)
  std::string kvserver;
};

int RunAcid(const AcidOptions& options);
void AddAcidCommand(CLI::App& app, int* exit_code);

}  // namespace kvbench
