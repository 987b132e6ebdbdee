// Server: the NDJSON-over-TCP front of a DB (see docs/protocol.md).
//
//   kvstore::net::Server server(db.get(), options);
//   kvstore::Status s = server.Start();    // binds and listens
//   server.Run();                           // serves until Stop() or SIGTERM/SIGINT
//
// Asio lives in server.cc only; this header is cheap to include.
//
// Thread safety: Start and Run are called once each, from one thread. Stop
// may be called from any thread, any number of times.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kvstore/db.h"
#include "kvstore/status.h"
#include "net/framer.h"
#include "net/handler.h"

namespace kvstore::net {

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 9000;  // 0 picks a free port; see Server::port()
  // Threads serving connections; 0 means one per core.
  size_t threads = 0;
  // Past this many open connections a new one gets one error line and is
  // closed.
  size_t max_connections = 10000;
  // A connection with no request in flight and nothing received for this
  // long is closed; 0 never times out.
  uint64_t idle_timeout_ms = 300000;
  size_t max_line_bytes = kDefaultMaxLineBytes;
  // Requests one connection may have in flight (pipelined) before the server
  // stops reading from it until responses drain.
  size_t max_pipeline = 4096;
  // On Stop, how long connections may take to answer what they have read
  // before the ones still busy (e.g. writing to a client that stopped
  // reading) are aborted.
  uint64_t drain_timeout_ms = 10000;
  // The HTTP side port (GET /metrics, GET /health) on host; -1 means none,
  // 0 picks a free port (see Server::metrics_port()).
  int metrics_port = -1;
  // Stop gracefully on SIGTERM and SIGINT.
  bool handle_signals = true;
  HandlerOptions handler;
};

class Server {
 public:
  // db must outlive the server.
  Server(DB* db, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens. IOError (with the reason) when the address is in use
  // or cannot be resolved.
  Status Start();
  // The bound port, after Start.
  uint16_t port() const;
  // The metrics port, after Start; -1 when there is none.
  int metrics_port() const;

  // Serves on the thread pool until Stop (or a handled signal): then stops
  // accepting, lets every connection finish the requests it has read
  // (their writes acknowledged and their responses sent), and returns once
  // all are closed.
  void Run();
  void Stop();

 private:
  friend class Connection;  // server.cc: one client's socket and coroutines
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstore::net
