// kvbench: kvstore's benchmark driver. Each subcommand lives in its own
// file and registers itself here; `kvbench engine` is the embedded engine
// benchmark (see engine_bench.h), `kvbench server` loads a kvserver over TCP
// (server_bench.h), `kvbench search` the three searches (search_bench.h),
// `kvbench suite` all of it end to end with reports (suite.h), `kvbench acid`
// the ACID suite (acid.h), `kvbench demo` a guided tour (demo.h) and
// `kvbench cluster` a 3-node cluster against etcd (cluster_bench.h).
#include <CLI/CLI.hpp>

#include "bench/acid.h"
#include "bench/cluster_bench.h"
#include "bench/demo.h"
#include "bench/engine_bench.h"
#include "bench/search_bench.h"
#include "bench/server_bench.h"
#include "bench/suite.h"

int main(int argc, char** argv) {
  CLI::App app{"kvbench: benchmarks for kvstore"};
  app.require_subcommand(1, 1);
  int exit_code = 0;
  kvbench::AddEngineCommand(app, &exit_code);
  kvbench::AddServerCommand(app, &exit_code);
  kvbench::AddSearchCommand(app, &exit_code);
  kvbench::AddSuiteCommand(app, &exit_code);
  kvbench::AddAcidCommand(app, &exit_code);
  kvbench::AddDemoCommand(app, &exit_code);
  kvbench::AddClusterCommand(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
