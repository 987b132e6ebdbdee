// Replication: the seam between the request handler and a consensus layer
// (cluster/ implements it over Raft). With HandlerOptions::replication set,
// the handler no longer writes to the DB itself: writes are encoded as
// WriteCommands (write_command.h) and proposed here, and they are applied to
// the DB, on every node, by the consensus layer. Reads ask for a read
// barrier first, so a read on the leader sees every write acknowledged
// before it started.
//
// Kept free of any consensus types so that net/ does not depend on them.
//
// Thread safety: every method may be called from any thread; callbacks run
// on a thread of the implementation's choosing and must be quick.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace kvstore::net {

// One answer for one request: a result, or a protocol error.
struct ReplicaAnswer {
  std::string result;         // JSON text, when error_code is empty
  std::string error_code;     // a docs/protocol.md error code, e.g. "not_leader"
  std::string error_message;
  std::string error_extra;    // a JSON object whose members join "error", or empty

  bool ok() const { return error_code.empty(); }
  static ReplicaAnswer Ok(std::string result) { return {std::move(result), {}, {}, {}}; }
  static ReplicaAnswer Error(std::string code, std::string message, std::string extra = {}) {
    return {{}, std::move(code), std::move(message), std::move(extra)};
  }
};

class Replication {
 public:
  // Runs exactly once per call.
  using Answer = std::function<void(ReplicaAnswer)>;

  virtual ~Replication() = default;

  // Replicates command (EncodeWriteCommand's bytes) and answers with its
  // result once it is committed and applied here, or with an error:
  // not_leader (with "leader"), or unavailable (outcome unknown when the
  // error says so).
  virtual void Propose(std::string command, Answer done) = 0;
  // Answers OK once every write committed before the call is applied here
  // and this node is still the leader; the caller then reads locally.
  virtual void ReadBarrier(Answer done) = 0;
  // Hands leadership to node `to` (0: any up-to-date follower).
  virtual void TransferLeadership(uint64_t to, Answer done) = 0;

  // The "cluster" member of stats (a JSON object).
  virtual std::string StatsJson() = 0;
  // Lines appended to GET /metrics.
  virtual std::string PrometheusText() = 0;
  // GET /health: false (with why) while no leader is known.
  virtual bool Healthy(std::string* why) = 0;
};

}  // namespace kvstore::net
