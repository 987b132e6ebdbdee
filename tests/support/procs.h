// Child processes for the end-to-end harnesses (`kvbench acid`, `demo`,
// `suite`, `cluster`) and the server crash loop (tests/crash_server.cc): a
// kvserver, a 3-node kvserver cluster, a redis-server and a 3-member etcd
// cluster, each on free 127.0.0.1 ports in a directory of its own, each
// stopped (and reaped) by its destructor however the harness ends. Children
// started from the main thread are also killed by the kernel if kvbench
// itself dies (Ctrl-C, a ctest timeout). (Namespace kvbench: where it
// started.)
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvbench {

// CPU seconds that the live threads of process pid have used so far
// (/proc/<pid>/task/*/schedstat); negative when it cannot be read.
double ProcessCpuSeconds(pid_t pid);

// A free TCP port on 127.0.0.1, below the ephemeral range so that no
// outgoing connection takes it before the server binds it.
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
  pid_t pid() const { return pid_; }
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
  // extra: more kvserver flags for every node (e.g. Raft timeouts).
  ClusterProcess(const std::string& binary, const std::string& dir, std::vector<std::string> extra = {});
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
  pid_t pid() const { return pid_; }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// Three etcd members (etcd 3.4, Debian's etcd-server) on loopback, each with
// its own data directory and free client and peer ports; the clients speak
// to it through its JSON gateway (/v3/...). Members fsync their WAL, as etcd
// always does. Leader discovery uses /v3/maintenance/status.
class EtcdCluster {
 public:
  // binary: the etcd executable; the Raft timeouts are etcd's
  // --heartbeat-interval and --election-timeout.
  EtcdCluster(std::string binary, std::string dir, int heartbeat_ms, int election_ms);
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  // Starts every member and waits until each reports itself healthy (which
  // etcd does only once it knows a leader). False on a failure or timeout.
  bool StartAll();
  // Restarts member i on its data directory and waits until it is healthy.
  bool Start(int i);
  void Kill(int i);
  bool running(int i) const { return pids_[i] > 0; }
  // The member every running member names as leader, or -1 after timeout_ms.
  int WaitForLeader(int timeout_ms = 10000);
  // Each member's client address ("127.0.0.1:port").
  const std::vector<std::string>& clients() const { return clients_; }

 private:
  bool Spawn(int i);
  bool WaitHealthy(int i, int timeout_ms);

  std::string binary_, dir_;
  int heartbeat_ms_, election_ms_;
  std::vector<std::string> clients_, peers_;
  std::vector<pid_t> pids_;
};

// Minimal HTTP/1.1 helpers for the etcd gateway, kept here so that no header
// includes cpp-httplib. One EtcdClient per thread: a keep-alive connection to
// one member at a time.
class EtcdClient {
 public:
  // addresses: "host:port" of the members; the client starts on
  // addresses[first % size] and moves to the next one after a failure.
  EtcdClient(std::vector<std::string> addresses, size_t first, int timeout_ms);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;
  // POST /v3/kv/put {"key":base64,"value":base64}; true when etcd answered
  // 200 with a response header (the put is committed and durable). On any
  // failure the connection is dropped and the next member is tried next time.
  bool Put(const std::string& key, const std::string& value);
  // POST path with a JSON body; the response body on HTTP 200.
  bool Post(const std::string& path, const std::string& body, std::string* response);

 private:
  struct Conn;
  std::vector<std::string> addresses_;
  size_t current_;
  int timeout_ms_;
  std::unique_ptr<Conn> conn_;
};

std::string Base64(const std::string& in);

}  // namespace kvbench
