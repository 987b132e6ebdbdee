// Node: one member of a Raft-replicated kvstore cluster (libraft on libuv
// behind this interface; nothing here exposes either).
//
//   cluster::NodeOptions o;  // id, peers, data_dir, ...
//   std::unique_ptr<cluster::Node> node;
//   Status s = cluster::Node::Open(o, &node);
//   handler_options.replication = node.get();   // writes go through Raft
//   net::Server server(node->db(), server_options);
//
// Writes arrive as WriteCommands (net/write_command.h), are appended to the
// Raft log, and once committed are applied, in log order, to this node's
// store on every node: each log entry becomes one WriteBatch that also
// records the entry's index under kAppliedIndexKey, so replaying the log
// after a restart skips what the store already holds. Reads on the leader
// go through a Raft barrier. Snapshots are engine checkpoints (see
// docs/cluster.md); a follower too far behind fetches one from a peer
// (transfer.h) and swaps its store for it.
//
// Data directory layout: raft/ (libraft's log and snapshot descriptors),
// store-N/ (the engine's store; STORE names the current one), checkpoints/
// (the checkpoints snapshots name).
//
// Thread safety: every method may be called from any thread. Raft runs on a
// thread of its own; callbacks of the Replication methods run on it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/db.h"
#include "kvstore/options.h"
#include "kvstore/status.h"
#include "net/replication.h"

namespace kvstore::cluster {

// The last applied Raft index, as decimal text. Starts with 0xff, which no
// client key (valid UTF-8) can, so clients never see or write it.
inline constexpr std::string_view kAppliedIndexKey = "\xff\xffkvstore/raft_applied";

struct NodeOptions {
  // This node's id: its 1-based position in peers.
  uint64_t id = 0;
  // Every member's Raft address ("host:port"), the same list on every node.
  std::vector<std::string> peers;
  // Every member's client address, same order: what not_leader answers name.
  std::vector<std::string> peer_clients;
  // Every member's checkpoint transfer address, same order; empty means each
  // peer's Raft host with its Raft port + 1000.
  std::vector<std::string> peer_transfers;
  std::string data_dir;
  Options db_options;
  unsigned election_timeout_ms = 300;
  unsigned heartbeat_timeout_ms = 50;
  // A leader gives up on an unanswered snapshot install after this (libraft's
  // default, 30 s, stalls a follower that was busy the first time).
  unsigned install_snapshot_timeout_ms = 2000;
  unsigned connect_retry_ms = 100;
  // Take a snapshot every snapshot_threshold applied entries, keeping
  // snapshot_trailing entries of log behind it for followers that lag a
  // little (those further behind install the snapshot).
  unsigned snapshot_threshold = 8192;
  unsigned snapshot_trailing = 8192;
  // Proposals waiting together are packed into one log entry up to this size.
  size_t max_entry_bytes = 4u << 20;
};

class Node final : public net::Replication {
 public:
  // Opens (or creates) the store and starts Raft. A brand new cluster
  // bootstraps with peers as its voters.
  static Status Open(NodeOptions options, std::unique_ptr<Node>* node);
  ~Node() override;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // The store, for reads and the admin ops. Stays valid (and follows
  // snapshot installs) until the Node is destroyed.
  DB* db();
  // Stops Raft: requests still queued or in flight are answered
  // (unavailable). Idempotent; the destructor calls it.
  void Stop();

  void Propose(std::string command, Answer done) override;
  void ReadBarrier(Answer done) override;
  void TransferLeadership(uint64_t to, Answer done) override;
  std::string StatsJson() override;
  std::string PrometheusText() override;
  bool Healthy(std::string* why) override;

  struct Impl;

 private:
  explicit Node(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstore::cluster
