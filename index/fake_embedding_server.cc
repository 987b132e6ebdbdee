#include "index/fake_embedding_server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "kvstore/embedder.h"

namespace kvstore::index {

using nlohmann::json;

struct FakeEmbeddingServer::Impl {
  explicit Impl(int dim) : dimension(dim), embedder(NewHashingEmbedder(dim)) {}

  const int dimension;
  const std::shared_ptr<Embedder> embedder;
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  int port = 0;

  std::atomic<int> fail_next{0};
  std::atomic<int> fail_status{503};
  std::atomic<int> delay_ms{0};
  std::atomic<int> extra_dims{0};
  std::atomic<uint64_t> requests{0}, texts{0}, max_batch{0};
  mutable std::mutex mu;
  std::string required_key, last_authorization, last_model;

  // The vectors of texts, times 3 (a client must normalise them).
  json Vectors(const json& input) {
    std::vector<std::string> strings;
    for (const json& t : input) strings.push_back(t.get<std::string>());
    std::vector<std::string_view> views(strings.begin(), strings.end());
    std::vector<std::vector<float>> vectors;
    (void)embedder->Embed(views, &vectors);
    json out = json::array();
    for (auto& v : vectors) {
      for (float& x : v) x *= 3;
      for (int i = 0; i < extra_dims.load(); i++) v.push_back(0.5f);
      out.push_back(v);
    }
    texts += strings.size();
    uint64_t m = max_batch.load();
    while (strings.size() > m && !max_batch.compare_exchange_weak(m, strings.size())) {
    }
    return out;
  }

  void Handle(const httplib::Request& req, httplib::Response& res, const std::string& kind) {
    if (int d = delay_ms.load(); d > 0) std::this_thread::sleep_for(std::chrono::milliseconds(d));
    {
      std::lock_guard lock(mu);
      last_authorization = req.get_header_value("Authorization");
      if (!required_key.empty() && last_authorization != "Bearer " + required_key) {
        res.status = 401;
        res.set_content(R"({"error":"bad key"})", "application/json");
        return;
      }
    }
    if (fail_next.load() > 0) {
      fail_next--;
      res.status = fail_status.load();
      res.set_content(R"({"error":"overloaded"})", "application/json");
      return;
    }
    const json body = json::parse(req.body, nullptr, false);
    const char* field = kind == "tei" ? "inputs" : "input";
    if (body.is_discarded() || !body.is_object() || !body.contains(field) || !body[field].is_array()) {
      res.status = 400;
      res.set_content(R"({"error":"bad request"})", "application/json");
      return;
    }
    {
      std::lock_guard lock(mu);
      last_model = body.value("model", "");
    }
    json vectors = Vectors(body[field]);
    json answer;
    if (kind == "openai") {
      answer = {{"object", "list"}, {"model", body.value("model", "")}, {"data", json::array()}};
      // Backwards, to check that the client orders by "index".
      for (size_t i = vectors.size(); i-- > 0;) {
        answer["data"].push_back({{"object", "embedding"}, {"index", i}, {"embedding", vectors[i]}});
      }
    } else if (kind == "ollama") {
      answer = {{"model", body.value("model", "")}, {"embeddings", vectors}};
    } else {
      answer = vectors;
    }
    requests++;
    res.set_content(answer.dump(), "application/json");
  }
};

FakeEmbeddingServer::FakeEmbeddingServer(int dimension) : impl_(std::make_unique<Impl>(dimension)) {}
FakeEmbeddingServer::~FakeEmbeddingServer() { Stop(); }

Status FakeEmbeddingServer::Start(int port) {
  Stop();
  Impl& im = *impl_;
  im.server = std::make_unique<httplib::Server>();
  // Stop waits for idle kept-alive connections to time out: keep that short.
  im.server->set_keep_alive_timeout(1);
  for (const char* kind : {"openai", "ollama", "tei"}) {
    const std::string k = kind;
    const char* path = k == "openai" ? "/v1/embeddings" : k == "ollama" ? "/api/embed" : "/embed";
    im.server->Post(path, [&im, k](const httplib::Request& req, httplib::Response& res) {
      try {
        im.Handle(req, res, k);
      } catch (const std::exception& e) {
        res.status = 500;
        res.set_content(e.what(), "text/plain");
      }
    });
  }
  if (port == 0) port = im.port;
  if (port == 0) {
    port = im.server->bind_to_any_port("127.0.0.1");
    if (port <= 0) return Status::IOError("fake embedding server: cannot bind");
  } else if (!im.server->bind_to_port("127.0.0.1", port)) {
    return Status::IOError("fake embedding server: cannot bind port " + std::to_string(port));
  }
  im.port = port;
  httplib::Server* server = im.server.get();
  im.thread = std::thread([server] { server->listen_after_bind(); });
  // stop() before the accept loop runs would be lost, and Stop would hang.
  while (!server->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return Status::OK();
}

void FakeEmbeddingServer::Stop() {
  Impl& im = *impl_;
  if (im.server) im.server->stop();
  if (im.thread.joinable()) im.thread.join();
  im.server.reset();
}

int FakeEmbeddingServer::port() const { return impl_->port; }
std::string FakeEmbeddingServer::url() const { return "http://127.0.0.1:" + std::to_string(impl_->port); }

void FakeEmbeddingServer::FailNext(int requests, int http_status) {
  impl_->fail_status = http_status;
  impl_->fail_next = requests;
}
void FakeEmbeddingServer::SetDelayMs(int ms) { impl_->delay_ms = ms; }
void FakeEmbeddingServer::SetExtraDimensions(int n) { impl_->extra_dims = n; }
void FakeEmbeddingServer::RequireKey(const std::string& key) {
  std::lock_guard lock(impl_->mu);
  impl_->required_key = key;
}
uint64_t FakeEmbeddingServer::requests() const { return impl_->requests.load(); }
uint64_t FakeEmbeddingServer::texts() const { return impl_->texts.load(); }
uint64_t FakeEmbeddingServer::max_batch() const { return impl_->max_batch.load(); }
std::string FakeEmbeddingServer::last_authorization() const {
  std::lock_guard lock(impl_->mu);
  return impl_->last_authorization;
}
std::string FakeEmbeddingServer::last_model() const {
  std::lock_guard lock(impl_->mu);
  return impl_->last_model;
}

}  // namespace kvstore::index
