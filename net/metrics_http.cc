#include "net/metrics_http.h"

#include <httplib.h>

namespace kvstore::net {

MetricsHttp::MetricsHttp(Metrics metrics, Health health)
    : metrics_(std::move(metrics)), health_(std::move(health)) {}

MetricsHttp::~MetricsHttp() { Stop(); }

Status MetricsHttp::Start(const std::string& host, int port) {
  http_ = std::make_unique<httplib::Server>();
  // Scrapes are rare and small: two threads are plenty, and keep this port
  // from competing with the data path.
  http_->new_task_queue = [] { return new httplib::ThreadPool(2); };
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_(), "text/plain; version=0.0.4");
  });
  http_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    std::string why;
    if (health_(&why)) {
      res.set_content("ok\n", "text/plain");
    } else {
      res.status = 503;
      res.set_content(why + "\n", "text/plain");
    }
  });
  if (port == 0) {
    port_ = http_->bind_to_any_port(host);
  } else {
    port_ = http_->bind_to_port(host, port) ? port : -1;
  }
  if (port_ <= 0) {
    http_.reset();
    return Status::IOError("metrics port: cannot bind " + host + ":" + std::to_string(port));
  }
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  return Status::OK();
}

void MetricsHttp::Stop() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
  http_.reset();
}

}  // namespace kvstore::net
