// Child processes for the end-to-end harnesses (`kvbench acid`, `demo`,
// `suite`): a kvserver, a 3-node kvserver cluster and a redis-server, each
// on free 127.0.0.1 ports in a directory of its own, each stopped (and
// reaped) by its destructor however the harness ends.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvbench {

// A free TCP port on 127.0.0.1 (bound, read back, released).
uint16_t FreePort();

// A fresh directory under /tmp, removed with everything in it on destruction
// unless keep() was called.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  void keep() { keep_ = true; }

 private:
  std::string path_;
  bool keep_ = false;
};

// One kvserver child. Start() waits for its "listening host:port" line; a
// restart reuses the first port, so clients need not be told.
class ServerProcess {
 public:
  ServerProcess(std::string binary, std::string data_dir, std::vector<std::string> extra_args = {});
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  bool Start();
  // Sends sig and reaps the child; true when it exited 0 (SIGTERM's promise).
  bool Stop(int sig);
  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // Where the child's stderr goes (appended across restarts).
  std::string log_path() const { return data_dir_ + ".log"; }
  void set_port(int port) { port_ = port; }

 private:
  std::string binary_, data_dir_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// Three `kvserver --cluster` children, as tests/cluster_test.cc runs them.
class ClusterProcess {
 public:
  ClusterProcess(const std::string& binary, const std::string& dir);
  bool StartAll();
  bool Start(int i) { return nodes_[i]->Start(); }
  void Kill(int i) { nodes_[i]->Stop(9); }
  // The node every running node agrees leads, or -1 after timeout_ms.
  int WaitForLeader(int timeout_ms = 10000);
  const std::vector<std::string>& clients() const { return clients_; }

 private:
  std::vector<std::string> clients_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
};

// redis-server as a durable peer: appendonly yes, appendfsync always, no RDB
// snapshots, on a free port.
class RedisProcess {
 public:
  explicit RedisProcess(std::string dir) : dir_(std::move(dir)) {}
  ~RedisProcess();
  // False when redis-server is not installed or does not answer PING.
  bool Start();
  bool Stop(int sig);
  int port() const { return port_; }
  bool running() const { return pid_ > 0; }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace kvbench
