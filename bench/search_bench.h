// `kvbench search`: load N generated documents with and without the search
// indexes, then time exact, full-text and semantic queries (see
// search_bench.cc for the corpus and what each figure means).
#pragma once

#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace kvbench {

struct SearchBenchOptions {
  std::string db = "/tmp/kvbench-search";
  uint64_t docs = 100000;
  uint64_t queries = 200;
  uint64_t recall_queries = 50;
  uint64_t vocabulary = 20000;
  uint64_t batch = 100;
  uint64_t seed = 42;
  bool skip_plain = false;
  bool keep = false;
  bool json = false;
};

int RunSearchBench(const SearchBenchOptions& options);
void AddSearchCommand(CLI::App& app, int* exit_code);

}  // namespace kvbench
