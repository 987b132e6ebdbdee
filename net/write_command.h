// WriteCommand: a write request (set, delete, bulk_set, cas, txn) in a form
// that can be shipped through a replicated log and evaluated later, on every
// node, against that node's store. Evaluation is deterministic: the same
// command on the same state gives the same writes and the same answer, so
// a cas that finds a different value is an answer ("conflict"), not a
// failure.
//
// Every kind is one shape: compares, then the success or the failure ops.
// set/delete/bulk_set have no compares; cas compares one key and reads it
// back on failure to report "current".
//
// Thread safety: pure functions over values.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/status.h"
#include "kvstore/write_batch.h"
#include "net/replication.h"

namespace kvstore::net {

struct WriteCommand {
  enum class Kind : uint8_t { kSet = 1, kDelete, kBulkSet, kCas, kTxn };
  struct Compare {
    enum Kind : uint8_t { kEq, kNe, kExists, kMissing };
    Kind kind = kEq;
    std::string key;
    std::string value;  // canonical JSON, for kEq / kNe
  };
  struct Op {
    enum Kind : uint8_t { kGet, kSet, kDelete };
    Kind kind = kGet;
    std::string key;
    std::string value;          // canonical JSON, for kSet
    std::vector<float> vector = {};  // kSet: the put's own vector for the semantic index; empty: none
  };
  Kind kind = Kind::kSet;
  std::vector<Compare> compares;
  std::vector<Op> success;
  std::vector<Op> failure;
  // The client's name for this write ("request_id"): a retry under the same
  // name gets the first answer and writes nothing (EvaluateOnce). Empty:
  // none.
  std::string request_id;
};

// Longest request_id accepted.
inline constexpr size_t kMaxRequestIdBytes = 128;
// How many request ids a store remembers (the newest); a retry arriving
// after this many other named writes applies again.
inline constexpr uint64_t kRememberedRequestIds = 100000;

std::string EncodeWriteCommand(const WriteCommand& command);
// False when data is not a whole, well-formed encoding.
bool DecodeWriteCommand(std::string_view data, WriteCommand* command);

// Reads a key's current value (nullopt when absent) as of the evaluation.
using CommandReader = std::function<Status(std::string_view key, std::optional<std::string>* value)>;
// Writes earlier commands of the same batch made but not yet committed:
// key -> value (nullopt: deleted). Consulted before the reader, then updated.
using CommandOverlay = std::map<std::string, std::optional<std::string>, std::less<>>;

// Evaluates command: appends its writes to batch (and overlay) and returns
// its protocol answer. A read error answers "internal" and writes nothing.
ReplicaAnswer EvaluateWriteCommand(const WriteCommand& command, const CommandReader& read,
                                   CommandOverlay* overlay, WriteBatch* batch);

// EvaluateWriteCommand, at most once per request_id: the first evaluation's
// answer is stored under the server's own keys (0xff 0xff "kvstore/req/"),
// in the same batch as its writes, and a command naming a remembered id
// gets that answer back and writes nothing. The newest `remembered` ids are
// kept, in a ring of slots written in the same batch, so every replica
// forgets the same ones. Without a request_id, just EvaluateWriteCommand.
ReplicaAnswer EvaluateOnce(const WriteCommand& command, const CommandReader& read, CommandOverlay* overlay,
                           WriteBatch* batch, uint64_t remembered = kRememberedRequestIds);

}  // namespace kvstore::net
