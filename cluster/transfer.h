// The checkpoint transfer: how a follower that must install a snapshot gets
// the engine files behind it. Raft ships only a small descriptor (see
// node.cc); the files come from the node that holds the checkpoint, over
// this plain TCP exchange (one request line, then a reply):
//
//   LIST <id>\n        -> "F <name> <size> <xxh3 hex>\n"... "END\n"
//   GET <id> <name>\n  -> "OK <size>\n" followed by the file's bytes
//   (any failure)      -> "ERR <message>\n"
//
// <id> and <name> are single path components under the server's root.
// Checkpoint files never change once made, so the XXH3 of the LIST reply
// checks what GET delivered.
//
// Thread safety: CheckpointServer's methods from one thread; FetchCheckpoint
// from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "kvstore/status.h"

namespace kvstore::cluster {

class CheckpointServer {
 public:
  explicit CheckpointServer(std::string root) : root_(std::move(root)) {}
  ~CheckpointServer() { Stop(); }
  CheckpointServer(const CheckpointServer&) = delete;
  CheckpointServer& operator=(const CheckpointServer&) = delete;

  // Listens on host:port (0 picks a free port) and serves on a thread.
  Status Start(const std::string& host, uint16_t port);
  uint16_t port() const { return port_; }
  void Stop();

 private:
  void Serve();
  void ServeConnection(int fd);

  const std::string root_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Copies checkpoint id from the server at address ("host:port") into dir
// (created; must not exist), checking every file's size and XXH3, and
// fsyncs it. On failure dir may hold part of the files.
Status FetchCheckpoint(const std::string& address, const std::string& id, const std::string& dir,
                       int timeout_ms);

}  // namespace kvstore::cluster
