// `kvbench demo` (`./kv demo`): a short guided tour against a fresh kvserver
// it starts in a temporary directory.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace kvbench {

struct DemoOptions {
  bool keep = false;
  std::string kvserver;
};

int RunDemo(const DemoOptions& options);
void AddDemoCommand(CLI::App& app, int* exit_code);

}  // namespace kvbench
