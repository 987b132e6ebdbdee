// libFuzzer target for the request path without sockets: bytes through the
// line framer, each line through the request handler over a real DB. The
// oracle: no crash, no sanitizer report, no hang, and every response is one
// JSON object with a boolean "ok". Built by cmake/fuzz_test.cmake with clang
// (-DKVSTORE_FUZZ=ON); run briefly by ctest, longer by hand:
//   build/fuzz/net/handler_fuzz -max_total_time=600 net/fuzz_corpus
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "kvstore/db.h"
#include "net/framer.h"
#include "net/handler.h"

namespace {

struct Fixture {
  std::unique_ptr<kvstore::DB> db;
  std::unique_ptr<kvstore::net::RequestHandler> handler;

  Fixture() {
    auto dir = std::filesystem::temp_directory_path() / ("handler_fuzz_" + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    if (!kvstore::DB::Open(kvstore::Options{}, dir.string(), &db).ok()) std::abort();
    kvstore::net::HandlerOptions options;
    options.sync = false;  // fsyncs would slow fuzzing a hundredfold and prove nothing here
    options.max_scan_limit = 100;
    options.max_batch_ops = 1000;
    handler = std::make_unique<kvstore::net::RequestHandler>(
        db.get(), options, [](std::function<void()> fn) { fn(); });
  }
};

void Check(const std::string& response) {
  nlohmann::json r = nlohmann::json::parse(response, nullptr, false);
  if (!r.is_object() || !r.contains("ok") || !r["ok"].is_boolean()) std::abort();
  if (!r["ok"].get<bool>() && !r["error"]["code"].is_string()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture* fixture = new Fixture;  // one store for the whole run, never torn down
  kvstore::net::LineFramer framer(4096);
  framer.Append(std::string_view(reinterpret_cast<const char*>(data), size));
  framer.Append("\n");
  auto session = std::make_shared<kvstore::net::Session>();
  std::string line;
  int sent = 0;
  auto state = std::make_shared<std::pair<std::mutex, std::condition_variable>>();
  auto answered = std::make_shared<int>(0);
  while (framer.Next(&line) == kvstore::net::LineFramer::Result::kLine) {
    ++sent;
    fixture->handler->Handle(line, session, [state, answered](std::string response) {
      Check(response);
      std::lock_guard lock(state->first);
      ++*answered;
      state->second.notify_all();
    });
  }
  std::unique_lock lock(state->first);
  if (!state->second.wait_for(lock, std::chrono::seconds(10), [&] { return *answered == sent; })) {
    std::abort();  // a request never answered
  }
  return 0;
}
