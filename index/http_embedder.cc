#include "index/http_embedder.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

namespace kvstore {

namespace index {

bool ParseHttpEmbedderApi(std::string_view name, HttpEmbedderApi* api) {
  if (name == "openai") {
    *api = HttpEmbedderApi::kOpenAI;
  } else if (name == "ollama") {
    *api = HttpEmbedderApi::kOllama;
  } else if (name == "tei") {
    *api = HttpEmbedderApi::kTEI;
  } else {
    return false;
  }
  return true;
}

const char* HttpEmbedderApiName(HttpEmbedderApi api) {
  switch (api) {
    case HttpEmbedderApi::kOpenAI:
      return "openai";
    case HttpEmbedderApi::kOllama:
      return "ollama";
    case HttpEmbedderApi::kTEI:
      return "tei";
  }
  return "?";
}

Status ParseEmbedderUrl(std::string_view url, EmbedderUrl* out) {
  const std::string whole(url);
  auto bad = [&](const char* why) { return Status::InvalidArgument("embedder URL \"" + whole + "\": " + why); };
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos) return bad("expected http://host:port[/base]");
  out->scheme.assign(url.substr(0, sep));
  if (out->scheme != "http" && out->scheme != "https") return bad("the scheme must be http or https");
  url.remove_prefix(sep + 3);
  const size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  std::string_view base = slash == std::string_view::npos ? std::string_view() : url.substr(slash);
  if (base.find_first_of("?#") != std::string_view::npos) return bad("no query or fragment, please");
  while (!base.empty() && base.back() == '/') base.remove_suffix(1);
  out->base.assign(base);
  if (authority.find('@') != std::string_view::npos) return bad("no credentials in the URL (use the API key variable)");
  out->port = out->scheme == "https" ? 443 : 80;
  std::string_view host = authority;
  if (!authority.empty() && authority.front() == '[') {  // [IPv6]:port
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unclosed [");
    host = authority.substr(1, close - 1);
    authority.remove_prefix(close + 1);
    if (!authority.empty() && authority.front() != ':') return bad("junk after ]");
  } else {
    const size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    authority = colon == std::string_view::npos ? std::string_view() : authority.substr(colon);
  }
  if (!authority.empty()) {  // ":port"
    const std::string digits(authority.substr(1));
    if (digits.empty() || digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos) {
      return bad("bad port");
    }
    out->port = std::atoi(digits.c_str());
    if (out->port <= 0 || out->port > 65535) return bad("bad port");
  }
  if (host.empty()) return bad("no host");
  out->host.assign(host);
  return Status::OK();
}

}  // namespace index

namespace {

using nlohmann::json;

// What one request came to: OK, an error worth retrying (the service may be
// restarting or overloaded), or one that will not go away by itself (a bad
// model name, a wrong key, a wrong dimension).
struct Attempt {
  Status status;
  bool retryable = false;
};

class HttpEmbedder final : public Embedder {
 public:
  HttpEmbedder(HttpEmbedderOptions options, index::EmbedderUrl url, std::string api_key)
      : options_(std::move(options)), url_(std::move(url)), api_key_(std::move(api_key)) {
    const char* kind = index::HttpEmbedderApiName(options_.api);
    name_ = std::string("http:") + kind + ":" + options_.model + ":" + std::to_string(options_.dimension);
    std::string base = url_.base;
    switch (options_.api) {
      case HttpEmbedderApi::kOpenAI:
        // "https://api.openai.com/v1" is how OpenAI's own clients name it.
        if (base.size() >= 3 && base.compare(base.size() - 3, 3, "/v1") == 0) base.resize(base.size() - 3);
        path_ = base + "/v1/embeddings";
        break;
      case HttpEmbedderApi::kOllama:
        path_ = base + "/api/embed";
        break;
      case HttpEmbedderApi::kTEI:
        path_ = base + "/embed";
        break;
    }
    if (options_.batch_size == 0) options_.batch_size = 1;
  }

  int dimension() const override { return options_.dimension; }
  std::string name() const override { return name_; }
  bool synchronous() const override { return false; }

  Status Embed(const std::vector<std::string_view>& texts, std::vector<std::vector<float>>* vectors) override {
    vectors->assign(texts.size(), std::vector<float>(static_cast<size_t>(options_.dimension), 0.0f));
    // Services reject empty inputs; an empty text has no features anyway.
    std::vector<size_t> todo;
    for (size_t i = 0; i < texts.size(); i++) {
      if (!texts[i].empty()) todo.push_back(i);
    }
    for (size_t start = 0; start < todo.size(); start += options_.batch_size) {
      const size_t end = std::min(todo.size(), start + options_.batch_size);
      std::vector<std::string_view> chunk;
      for (size_t j = start; j < end; j++) chunk.push_back(texts[todo[j]]);
      std::vector<std::vector<float>> got;
      Status s = EmbedWithRetries(chunk, &got);
      if (!s.ok()) {
        vectors->clear();
        return s;
      }
      for (size_t j = start; j < end; j++) (*vectors)[todo[j]] = std::move(got[j - start]);
    }
    return Status::OK();
  }

 private:
  Status EmbedWithRetries(const std::vector<std::string_view>& texts, std::vector<std::vector<float>>* out) {
    int delay_ms = std::max(options_.backoff_ms, 0);
    for (int attempt = 0;; attempt++) {
      Attempt a = Request(texts, out);
      if (a.status.ok() || !a.retryable || attempt >= options_.retries) return a.status;
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      delay_ms = std::min(delay_ms * 2, 10000);
    }
  }

  std::string RequestBody(const std::vector<std::string_view>& texts) const {
    json input = json::array();
    for (std::string_view t : texts) input.push_back(std::string(t));
    json body;
    if (options_.api == HttpEmbedderApi::kTEI) {
      body["inputs"] = std::move(input);
      // TEI refuses inputs longer than the model's window unless told to cut them.
      body["truncate"] = true;
    } else {
      body["model"] = options_.model;
      body["input"] = std::move(input);
    }
    // Invalid UTF-8 in a value becomes U+FFFD rather than an exception.
    return body.dump(-1, ' ', false, json::error_handler_t::replace);
  }

  Attempt Request(const std::vector<std::string_view>& texts, std::vector<std::vector<float>>* out) {
    std::unique_ptr<httplib::Client> client = TakeClient();
    httplib::Headers headers;
    if (!api_key_.empty()) headers.emplace("Authorization", "Bearer " + api_key_);
    std::string body;
    httplib::Result res(nullptr, httplib::Error::Unknown);
    try {
      body = RequestBody(texts);
      res = client->Post(path_, headers, body, "application/json");
    } catch (const std::exception& e) {
      return {Status::IOError(Where() + ": " + e.what()), true};
    }
    if (!res) {
      // The connection is in an unknown state: drop the client.
      return {Status::IOError(Where() + ": request failed (" + httplib::to_string(res.error()) + ")"), true};
    }
    const int status = res->status;
    if (status < 200 || status > 299) {
      std::string snippet = res->body.substr(0, 200);
      for (char& c : snippet) {
        if (c == '\n' || c == '\r') c = ' ';
      }
      ReturnClient(std::move(client));
      const bool retryable = status == 408 || status == 429 || status >= 500;
      return {Status::IOError(Where() + ": HTTP " + std::to_string(status) + (snippet.empty() ? "" : ": " + snippet)),
              retryable};
    }
    std::string response = std::move(res->body);
    ReturnClient(std::move(client));
    Status s;
    try {
      s = Parse(response, texts.size(), out);
    } catch (const std::exception& e) {
      s = Status::IOError(Where() + ": unreadable answer: " + e.what());
    }
    return {s, false};
  }

  // The vectors of one answer, in input order, checked and L2-normalised.
  Status Parse(const std::string& response, size_t n, std::vector<std::vector<float>>* out) const {
    const json doc = json::parse(response, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return Status::IOError(Where() + ": the answer is not JSON");
    std::vector<const json*> rows(n, nullptr);
    const json* list = nullptr;
    switch (options_.api) {
      case HttpEmbedderApi::kOpenAI: {
        if (!doc.is_object() || !doc.contains("data") || !doc["data"].is_array()) {
          return Status::IOError(Where() + ": no \"data\" array in the answer");
        }
        const json& data = doc["data"];
        if (data.size() != n) break;
        for (size_t i = 0; i < n; i++) {
          const json& item = data[i];
          if (!item.is_object() || !item.contains("embedding")) {
            return Status::IOError(Where() + ": a \"data\" item has no \"embedding\"");
          }
          size_t at = i;
          if (item.contains("index")) {
            if (!item["index"].is_number_unsigned() || item["index"].get<uint64_t>() >= n) {
              return Status::IOError(Where() + ": a \"data\" item has a bad \"index\"");
            }
            at = item["index"].get<size_t>();
          }
          if (rows[at] != nullptr) return Status::IOError(Where() + ": two \"data\" items with one \"index\"");
          rows[at] = &item["embedding"];
        }
        break;
      }
      case HttpEmbedderApi::kOllama:
        if (!doc.is_object() || !doc.contains("embeddings") || !doc["embeddings"].is_array()) {
          return Status::IOError(Where() + ": no \"embeddings\" array in the answer");
        }
        list = &doc["embeddings"];
        break;
      case HttpEmbedderApi::kTEI:
        if (!doc.is_array()) return Status::IOError(Where() + ": the answer is not an array of vectors");
        list = &doc;
        break;
    }
    if (list != nullptr && list->size() == n) {
      for (size_t i = 0; i < n; i++) rows[i] = &(*list)[i];
    }
    if (std::find(rows.begin(), rows.end(), nullptr) != rows.end()) {
      return Status::IOError(Where() + ": asked for " + std::to_string(n) + " vectors, got another number");
    }
    out->assign(n, {});
    for (size_t i = 0; i < n; i++) {
      const json& row = *rows[i];
      if (!row.is_array()) return Status::IOError(Where() + ": a vector is not an array of numbers");
      if (row.size() != static_cast<size_t>(options_.dimension)) {
        return Status::InvalidArgument(Where() + ": the model returned " + std::to_string(row.size()) +
                                       " dimensions, configured " + std::to_string(options_.dimension));
      }
      std::vector<float>& v = (*out)[i];
      v.reserve(row.size());
      double norm = 0;
      for (const json& x : row) {
        if (!x.is_number()) return Status::IOError(Where() + ": a vector is not an array of numbers");
        const double d = x.get<double>();
        if (!std::isfinite(d)) return Status::IOError(Where() + ": a vector holds a NaN or infinity");
        v.push_back(static_cast<float>(d));
        norm += d * d;
      }
      // Most models normalise already; some (and TEI with normalize=false)
      // do not, and cosine over the index assumes unit vectors.
      if (norm > 0) {
        const float scale = static_cast<float>(1 / std::sqrt(norm));
        for (float& x : v) x *= scale;
      }
    }
    return Status::OK();
  }

  std::string Where() const { return "embedder " + name_ + " at " + url_.host + ":" + std::to_string(url_.port) + path_; }

  // Clients are kept for their keep-alive connections; each serves one
  // request at a time, so concurrent Embed calls take one each.
  std::unique_ptr<httplib::Client> TakeClient() {
    {
      std::lock_guard lock(pool_mu_);
      if (!pool_.empty()) {
        std::unique_ptr<httplib::Client> c = std::move(pool_.back());
        pool_.pop_back();
        return c;
      }
    }
    auto c = std::make_unique<httplib::Client>(url_.scheme + "://" + url_.host + ":" + std::to_string(url_.port));
    auto split = [](int ms, time_t* sec, time_t* usec) {
      ms = std::max(ms, 1);
      *sec = ms / 1000;
      *usec = static_cast<time_t>(ms % 1000) * 1000;
    };
    time_t sec, usec;
    split(options_.connect_timeout_ms, &sec, &usec);
    c->set_connection_timeout(sec, usec);
    split(options_.read_timeout_ms, &sec, &usec);
    c->set_read_timeout(sec, usec);
    c->set_write_timeout(sec, usec);
    c->set_keep_alive(true);
    return c;
  }

  void ReturnClient(std::unique_ptr<httplib::Client> c) {
    std::lock_guard lock(pool_mu_);
    if (pool_.size() < 8) pool_.push_back(std::move(c));
  }

  HttpEmbedderOptions options_;
  const index::EmbedderUrl url_;
  const std::string api_key_;
  std::string name_;
  std::string path_;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<httplib::Client>> pool_;
};

}  // namespace

Status NewHttpEmbedder(const HttpEmbedderOptions& options, std::shared_ptr<Embedder>* out) {
  out->reset();
  index::EmbedderUrl url;
  Status s = index::ParseEmbedderUrl(options.url, &url);
  if (!s.ok()) return s;
  if (options.dimension <= 0) return Status::InvalidArgument("http embedder: the dimension must be given (> 0)");
  if (options.model.empty() && options.api != HttpEmbedderApi::kTEI) {
    return Status::InvalidArgument("http embedder: a model name is required for this API");
  }
  std::string key;
  if (!options.api_key_env.empty()) {
    const char* v = std::getenv(options.api_key_env.c_str());
    if (v == nullptr || *v == '\0') {
      return Status::InvalidArgument("http embedder: the API key variable " + options.api_key_env +
                                     " is unset or empty");
    }
    key = v;
  }
  try {
    *out = std::make_shared<HttpEmbedder>(options, std::move(url), std::move(key));
  } catch (const std::exception& e) {
    return Status::IOError(std::string("http embedder: ") + e.what());
  }
  return Status::OK();
}

}  // namespace kvstore
