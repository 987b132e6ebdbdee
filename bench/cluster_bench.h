// `kvbench cluster`: a 3-node kvstore cluster against a 3-member etcd 3.4
// cluster, both started by kvbench on loopback in the same run, with the
// same Raft timeouts:
//   set       durable replicated sets from many clients at once, one request
//             in flight per client (kvstore: NDJSON through net::Client,
//             redirected to the leader; etcd: JSON PUT through its HTTP
//             gateway on keep-alive connections, to the leader)
//   failover  kill -9 of the leader under a write load, then the time to the
//             first acknowledged write that started after the kill; the
//             killed node is restarted between trials
// and the kvstore/etcd ratios. Every process it starts is stopped however
// it ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace kvbench {

// One system's result of one workload.
struct ClusterResult {
  std::string system;    // kvstore, etcd
  std::string workload;  // set, failover
  int clients = 0;
  // set
  uint64_t ops = 0, errors = 0;
  double seconds = 0, ops_per_sec = 0, p50_us = 0, p99_us = 0;
  // failover
  int trials = 0, failed_trials = 0;
  double median_ms = 0, max_ms = 0;
  int64_t lost = -1;  // kvstore: acknowledged writes not found afterwards
};

struct ClusterBenchOptions {
  // "kvstore", "etcd", or both (the ratios need both).
  std::vector<std::string> systems = {"kvstore", "etcd"};
  int clients = 64;
  double seconds = 5;
  size_t value_size = 100;
  int failover_trials = 5;
  // Writers during the failover trials, and how long each waits for a write
  // before it gives up and tries again (both systems alike; see
  // docs/cluster.md: an etcd follower forwards a write to the leader it
  // still believes in, and a write forwarded to a dead leader is never
  // answered, so without a client timeout the first write after a kill
  // waits out etcd's own request timeout of about 7 s).
  int failover_clients = 8;
  int failover_timeout_ms = 500;
  // Both systems get the same: kvserver's defaults.
  int election_timeout_ms = 300;
  int heartbeat_ms = 50;
  bool json = false;
  std::string kvserver;
  std::string etcd = "/usr/bin/etcd";
  // When set, results go here instead of to stdout (the suite's report).
  std::function<void(const ClusterResult&)> on_result;
};

int RunClusterBench(const ClusterBenchOptions& options);
void AddClusterCommand(CLI::App& app, int* exit_code);

}  // namespace kvbench
