// The server half of the crash loop (tests/crash_server.cc): kill -9 of a
// kvserver under client load, restart, read back through the server.
#pragma once

#include <cstdint>
#include <string>

namespace crash_loop {

struct ServerLoopOptions {
  std::string kvserver;  // the kvserver binary
  int cycles = 5;
  int clients = 4;  // writer connections
  uint64_t seed = 1;
  std::string dir;  // the store's directory; empty: a fresh one under /tmp
  bool keep = false;  // leave the directory (and the server's log) behind
};

// Prints one line per cycle and then
// "crash_loop(server): cycles=N acknowledged=A lost=L partial=P"; returns
// the exit code: 0, or 1 when anything was lost or partly there (or the
// server did not come back).
int RunServerLoop(const ServerLoopOptions& options);

}  // namespace crash_loop
