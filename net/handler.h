// RequestHandler: one NDJSON request line in, one response line out, over
// the public DB API. It knows nothing of sockets (the server feeds it lines
// from the framer), so tests drive it directly.
//
// Reads answer inline. Writes go through DB::WriteAsync and answer from the
// DB's callback thread, so many connections' writes share one fsync without
// a blocked thread each. Atomicity of cas and txn comes from KeyLocks (see
// key_locks.h), taken by every write op.
//
// Thread safety: Handle may be called from any number of threads at once.
// Every exception from JSON handling is caught inside Handle; none escape.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <string_view>

#include "kvstore/db.h"
#include "net/key_locks.h"

namespace kvstore::net {

class Replication;

struct HandlerOptions {
  // Deepest '[' / '{' nesting a request may have (bad_request beyond).
  size_t max_depth = 64;
  // When non-empty, a connection must send {"op":"auth","token":...} first.
  std::string auth_token;
  // Largest limit a scan may ask for.
  size_t max_scan_limit = 100000;
  // A scan response stops (with "more":true) once it holds this many bytes.
  size_t max_scan_bytes = 16u << 20;
  // Largest number of ops in one bulk_set, bulk_get or txn.
  size_t max_batch_ops = 1000000;
  // Durable before acknowledged (WriteOptions::sync).
  bool sync = true;
  // Where the checkpoint op may write: {"op":"checkpoint","name":N} makes
  // <checkpoint_dir>/<N>. Empty: the op is refused. Clients never name an
  // arbitrary path on the server's host.
  std::string checkpoint_dir;
  // Serve simple ping/get/set/delete lines without building a JSON DOM (see
  // fast_request.h). Same answers either way; tests turn it off to compare.
  bool fast_path = true;
  // Cluster mode (see replication.h): writes go through it, reads wait for
  // its read barrier unless the request says "stale":true. Not owned; must
  // outlive the handler. nullptr: a standalone server.
  Replication* replication = nullptr;
};

// Per-connection state the protocol needs. Besides auth it keeps one
// connection's requests in order: writes start in the order they arrive and
// may overlap (so a pipeline of sets shares fsyncs), but any other request
// waits until every earlier write of its connection is acknowledged, so a
// get pipelined behind a set sees that set.
struct Session {
  Session();
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  bool authenticated = false;
  // Set by a caller that hands Handle every line of one read and then calls
  // RequestHandler::FlushWrites (the server does): simple sets and deletes
  // that may start at once are then gathered into one WriteBatch, committed
  // as one group-commit entry at the flush, and still answered one by one,
  // in order. Off, every write is committed on its own.
  bool coalesce_writes = false;

 private:
  friend class RequestHandler;
  struct Coalesced;
  // Writes gathered since the last flush; touched only by the thread
  // calling Handle and FlushWrites for this session (one at a time).
  std::shared_ptr<Coalesced> coalesced;  // shared: its commit's callback holds it
  struct Queued {
    bool is_write;
    std::function<void()> run;
  };
  std::mutex mu;
  uint64_t writes_pending = 0;   // guarded by mu: started, not yet answered
  std::deque<Queued> blocked;    // guarded by mu: waiting for their turn
  bool draining = false;         // guarded by mu: a Drain is running or posted
};

// The ops the protocol knows, for per-op counters.
enum class Op : uint8_t {
  kPing, kAuth, kGet, kSet, kDelete, kBulkSet, kBulkGet, kScan, kCas, kTxn, kStats,
  kFlush, kCompact, kCheckpoint, kSearchByValue, kFulltextSearch, kSemanticSearch,
  kTransferLeader,
  kCount
};
const char* OpName(Op op);

class RequestHandler {
 public:
  // Runs exactly once with the response line (no trailing '\n'); possibly
  // inline, possibly on a DB thread.
  using Done = std::function<void(std::string response)>;
  // Runs fn soon on some thread that may block briefly on DB reads. Used to
  // move a request off a DB callback thread once its key locks are granted.
  using Post = std::function<void(std::function<void()> fn)>;

  RequestHandler(DB* db, HandlerOptions options, Post post);
  ~RequestHandler();
  RequestHandler(const RequestHandler&) = delete;
  RequestHandler& operator=(const RequestHandler&) = delete;

  // session is shared because late callbacks (a write's acknowledgement, a
  // queued read) may outlive the caller's interest in the response.
  void Handle(std::string_view line, std::shared_ptr<Session> session, Done done);
  // With session->coalesce_writes: commits the writes gathered since the
  // last flush. Call it after the last line of each read, and before
  // waiting for anything (responses of gathered writes come only after it).
  void FlushWrites(const std::shared_ptr<Session>& session);

  // An error line with no id, for failures found before a request is parsed
  // (a line over the limit, too many connections).
  static std::string ErrorLine(std::string_view code, std::string_view message);

  // GET /metrics: Prometheus text exposition of the counters below, per-op
  // requests, errors and latency histograms, and the engine's stats.
  std::string PrometheusText();
  // GET /health: false (with the reason) when the store refuses writes.
  bool Healthy(std::string* why);

  // The server keeps these; stats reports them.
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> connections_total{0};
  std::atomic<uint64_t> connections_rejected{0};

  // Writes whose callback has not run yet; the server waits for zero before
  // it closes the DB.
  uint64_t writes_in_flight() const { return writes_in_flight_.load(); }

 private:
  struct Impl;
  // n writes of session were answered; start what waited for them.
  void WriteFinished(const std::shared_ptr<Session>& session, uint64_t n = 1);
  void Drain(const std::shared_ptr<Session>& session);

  std::unique_ptr<Impl> impl_;
  std::atomic<uint64_t> writes_in_flight_{0};
};

}  // namespace kvstore::net
