// Client: a synchronous NDJSON client for kvserver (docs/protocol.md).
//
//   kvstore::net::Client client({.addresses = {"127.0.0.1:9000"}});
//   std::string response;
//   kvstore::Status s = client.Call(R"({"op":"get","key":"a"})", &response);
//
// It speaks raw request and response lines, so it needs no JSON library in
// its header; callers build requests with whatever they like. One connection
// is opened on first use and reused; a connection that fails is dropped and
// the next call reconnects. A not_leader answer naming a leader is followed
// (the request is resent there), up to max_redirects times. With
// failover_ms, a cluster client also waits out an election: while no node
// accepts a connection, or the nodes answer not_leader without naming a
// leader, Call keeps trying the addresses in turn, with backoff.
//
// Thread safety: one client per thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/status.h"

namespace kvstore::net {

struct ClientOptions {
  // "host:port" entries, tried in order when connecting.
  std::vector<std::string> addresses = {"127.0.0.1:9000"};
  // For connecting, and for each wait on the socket.
  int timeout_ms = 30000;
  // Sent as {"op":"auth"} right after connecting, when non-empty.
  std::string token;
  int max_redirects = 3;
  // How long Call keeps retrying while no leader is reachable (see above);
  // 0: one try. A request that was sent but not answered is never resent
  // (its outcome is unknown; the caller decides).
  int failover_ms = 0;
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends one request line (without '\n') and reads its response line. An
  // error Status means the exchange failed (IOError: connection refused,
  // closed or timed out); a server-side error is an OK Status with an
  // {"ok":false,...} response.
  Status Call(std::string_view request, std::string* response);

  // Pipelining: sends every request at once, then reads the responses, in
  // the same order. Not redirected.
  Status CallMany(const std::vector<std::string>& requests, std::vector<std::string>* responses);

  // The address of the current connection, or "" when not connected.
  const std::string& connected_to() const { return connected_to_; }
  void Close();

 private:
  Status EnsureConnected();
  Status ConnectTo(const std::string& address);
  Status SendAll(std::string_view data);
  Status ReadLine(std::string* line);
  Status Exchange(std::string_view request, std::string* response);

  ClientOptions options_;
  int fd_ = -1;
  std::string connected_to_;
  std::string buffer_;  // received, not yet returned
};

}  // namespace kvstore::net
