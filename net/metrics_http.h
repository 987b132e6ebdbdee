// MetricsHttp: the HTTP side port (cpp-httplib, kept out of every other
// header): GET /metrics in Prometheus text format and GET /health.
//
// Thread safety: Start, then Stop, from one thread; the callbacks run on
// the HTTP server's threads.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "kvstore/status.h"

namespace httplib {
class Server;
}

namespace kvstore::net {

class MetricsHttp {
 public:
  using Metrics = std::function<std::string()>;
  using Health = std::function<bool(std::string* why)>;

  MetricsHttp(Metrics metrics, Health health);
  ~MetricsHttp();  // stops
  MetricsHttp(const MetricsHttp&) = delete;
  MetricsHttp& operator=(const MetricsHttp&) = delete;

  // Binds host:port (0 picks a free port) and serves on a thread.
  Status Start(const std::string& host, int port);
  int port() const { return port_; }
  void Stop();

 private:
  Metrics metrics_;
  Health health_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace kvstore::net
