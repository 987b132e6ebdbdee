// The checkpoint transfer: how a follower that must install a snapshot gets
// the engine files behind it. Raft ships only a small descriptor (see
// node.cc); the files come from the node that holds the checkpoint, over
// this plain TCP exchange (one request line, then a reply):
//
//   LIST <id>\n        -> "F <name> <size> <xxh3 hex>\n"... "END\n"
//   GET <id> <name>\n  -> "OK <size>\n" followed by the file's bytes
//   NEWEST <min id>\n  -> "ID <id>\n": a checkpoint holding at least the
//                         log index min id names (made on demand if the
//                         node has applied that far but holds none)
//   (any failure)      -> "ERR <message>\n"
//
// <id> and <name> are single path components under the server's root.
// Checkpoint files never change once made, so the XXH3 of the LIST reply
// checks what GET delivered. The LIST reply is precomputed: the node that
// makes a checkpoint (or fetches one) writes it into the checkpoint as
// kChecksumsFile, so answering costs no hashing (a checkpoint of a few GB
// took longer to hash than the fetcher waits for an answer). For a
// checkpoint without that file the server hashes file by file and sends each
// line as soon as it has it, so the fetcher's per-read timeout still holds.
//
// A checkpoint the server is sending (from LIST until the connection ends)
// is pinned: Retire refuses it, so the node does not delete it mid-fetch.
//
// Thread safety: Start and Stop from one thread; Retire from any;
// FetchCheckpoint and WriteChecksums from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "kvstore/status.h"

namespace kvstore::cluster {

// In every checkpoint directory: the LIST reply for it ("F ..." lines, then
// "END"). Never listed, fetched or copied into a store itself.
inline constexpr const char* kChecksumsFile = "XXH3SUMS";

// Hashes every file in dir and writes dir/kChecksumsFile (fsync'd).
Status WriteChecksums(const std::string& dir);

class CheckpointServer {
 public:
  explicit CheckpointServer(std::string root) : root_(std::move(root)) {}
  ~CheckpointServer() { Stop(); }
  CheckpointServer(const CheckpointServer&) = delete;
  CheckpointServer& operator=(const CheckpointServer&) = delete;

  // Answers NEWEST: returns the id of a checkpoint under root whose store
  // holds the log at least up to min_id (ids are zero-padded log indexes,
  // and a checkpoint's store may hold more than its id says), or "" when
  // there is none. Runs on the server's thread. Set before Start.
  using NewestProvider = std::function<std::string(const std::string& min_id)>;
  void SetNewestProvider(NewestProvider provider) { newest_ = std::move(provider); }

  // Listens on host:port (0 picks a free port) and serves on a thread.
  Status Start(const std::string& host, uint16_t port);
  uint16_t port() const { return port_; }
  void Stop();

  // True (and from then on the checkpoint is refused to fetchers) unless a
  // fetch of checkpoint id is in progress: the caller may delete it.
  bool Retire(const std::string& id);

  // Test hook: the next n LIST requests are answered ERR, as by a holder
  // that is restarting.
  void FailNextLists(int n) { fail_lists_ = n; }

 private:
  void Serve();
  void ServeConnection(int fd);

  const std::string root_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> fail_lists_{0};
  NewestProvider newest_;
  std::thread thread_;
  std::mutex mu_;
  std::string sending_;            // guarded by mu_: the checkpoint being fetched, if any
  std::set<std::string> retired_;  // guarded by mu_
};

// Copies checkpoint id from the server at address ("host:port") into dir
// (created; must not exist), checking every file's size and XXH3, writes its
// kChecksumsFile (so this node can serve it in turn), and fsyncs it.
// timeout_ms bounds each wait on the socket, not the whole transfer. On
// failure dir may hold part of the files.
Status FetchCheckpoint(const std::string& address, const std::string& id, const std::string& dir,
                       int timeout_ms);

// Asks the server at address for a checkpoint holding the log at least up
// to min_id (NEWEST). NotFound when it has none and cannot make one.
Status FindNewestCheckpoint(const std::string& address, const std::string& min_id, std::string* id,
                            int timeout_ms);

}  // namespace kvstore::cluster
