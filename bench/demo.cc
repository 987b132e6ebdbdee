// `kvbench demo`: a guided tour of kvserver for a newcomer, against a fresh
// server in a temporary directory: every request and response is printed as
// it goes. It also checks the answers, so the ctest smoke run of it fails
// when the tour would show something wrong.
#include "bench/demo.h"

#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "tests/support/procs.h"
#include "net/client.h"

namespace kvbench {
namespace {

// Insertion order, so the requests print as one would type them ("op" first).
using json = nlohmann::ordered_json;

class Tour {
 public:
  explicit Tour(const std::string& address) : client_(Options(address)) {}

  static void Section(const char* title) { std::printf("\n== %s\n", title); }
  static void Say(const std::string& text) { std::printf("   %s\n", text.c_str()); }

  // Sends one request, prints both lines, and checks the answer with want
  // (which gets the response). False (and a message) when it fails.
  template <typename Want>
  bool Step(const json& request, Want want) {
    std::string line = request.dump(), response;
    std::printf("-> %s\n", Shorten(line).c_str());
    if (!client_.Call(line, &response).ok()) {
      std::printf("   the server did not answer\n");
      return ok_ = false;
    }
    std::printf("<- %s\n", Shorten(response).c_str());
    json r = json::parse(response, nullptr, false);
    if (r.is_discarded() || !want(r)) {
      std::printf("   UNEXPECTED: this is not the answer the tour expected\n");
      return ok_ = false;
    }
    return true;
  }
  bool Step(const json& request) {
    return Step(request, [](const json& r) { return r.value("ok", false); });
  }
  void Reconnect() { client_.Close(); }
  static kvstore::net::ClientOptions Options(const std::string& address) {
    kvstore::net::ClientOptions o;
    o.addresses = {address};
    return o;
  }
  bool ok() const { return ok_; }

 private:
  static std::string Shorten(const std::string& s) {
    return s.size() <= 240 ? s : s.substr(0, 220) + " ... (" + std::to_string(s.size()) + " bytes)";
  }
  kvstore::net::Client client_;
  bool ok_ = true;
};

bool Contains(const json& list, const std::string& key) {
  for (const json& e : list) {
    if ((e.is_string() && e == key) || (e.is_object() && e.value("key", "") == key)) return true;
  }
  return false;
}

}  // namespace

int RunDemo(const DemoOptions& o) {
  TempDir dir("kvbench-demo");
  if (o.keep) dir.keep();
  ServerProcess server(o.kvserver, dir.path() + "/data");
  std::printf("kvstore demo: starting a fresh kvserver with its data in %s/data\n", dir.path().c_str());
  if (dir.path().empty() || !server.Start()) {
    std::fprintf(stderr, "kvbench demo: could not start %s\n", o.kvserver.c_str());
    return 1;
  }
  Tour::Say("listening on " + server.address() + "; one JSON request per line, one response per line");
  Tour t(server.address());
  auto ok_result = [](json want) { return [want](const json& r) { return r.value("ok", false) && r["result"] == want; }; };

  Tour::Section("1. CRUD: set, get, update, delete");
  t.Step({{"op", "set"}, {"key", "name"}, {"value", "Alice"}});
  Tour::Say("acknowledged only once the write is fdatasync'd to the write-ahead log");
  t.Step({{"op", "get"}, {"key", "name"}}, ok_result("Alice"));
  t.Step({{"op", "set"}, {"key", "config"}, {"value", {{"max_conn", 100}, {"debug", true}}}});
  Tour::Say("values are any JSON; objects are stored canonically, members sorted");
  t.Step({{"op", "get"}, {"key", "config"}}, ok_result({{"debug", true}, {"max_conn", 100}}));
  t.Step({{"op", "cas"}, {"key", "name"}, {"expected", "Alice"}, {"value", "Alicia"}});
  Tour::Say("compare-and-set: writes only if the value is still what we expect...");
  t.Step({{"op", "cas"}, {"key", "name"}, {"expected", "Alice"}, {"value", "Al"}},
         [](const json& r) { return r["error"].value("code", "") == "conflict"; });
  Tour::Say("...so a stale expectation is refused with the current value");
  t.Step({{"op", "set"}, {"key", "temp"}, {"value", 42}});
  t.Step({{"op", "delete"}, {"key", "temp"}});
  t.Step({{"op", "get"}, {"key", "temp"}}, [](const json& r) { return r["error"].value("code", "") == "not_found"; });

  Tour::Section("2. Bulk writes: all or nothing, one WAL record, one fsync");
  json users = json::array({{"user:1", "Alice"}, {"user:2", "Bob"}, {"user:3", "Charlie"}, {"user:4", "Dana"}});
  t.Step({{"op", "bulk_set"}, {"items", users}}, ok_result({{"count", 4}}));
  t.Step({{"op", "bulk_get"}, {"keys", {"user:1", "user:3", "user:9"}}},
         ok_result({{"user:1", "Alice"}, {"user:3", "Charlie"}}));
  Tour::Say("missing keys are left out; every key is read at one snapshot");
  t.Step({{"op", "scan"}, {"prefix", "user:"}, {"limit", 3}},
         [](const json& r) { return r.value("ok", false) && r["result"]["items"].size() == 3 && r["result"]["more"] == true; });
  Tour::Say("scans run in key order; 'more' says there is a next page");
  t.Step({{"op", "txn"},
          {"compare", {{{"key", "user:2"}, {"value", "Bob"}}}},
          {"success", {{{"op", "set"}, {"key", "user:2"}, {"value", "Robert"}}, {{"op", "get"}, {"key", "user:2"}}}},
          {"failure", {{{"op", "get"}, {"key", "user:2"}}}}},
         [](const json& r) { return r.value("ok", false) && r["result"]["succeeded"] == true; });
  Tour::Say("an etcd-style transaction: compares, then one branch of ops, atomically");

  Tour::Section("3. The three searches");
  json docs = json::array({
      {"doc:1", "The quick brown fox jumps over the lazy dog"},
      {"doc:2", "Python is a popular programming language for databases"},
      {"doc:3", "Machine learning and artificial intelligence research"},
      {"doc:4", {{"title", "kvstore"}, {"body", "a fast database with a write-ahead log"}}},
      {"doc:5", "Quick foxes are clever animals"},
      {"doc:6", "Bob"},
  });
  t.Step({{"op", "bulk_set"}, {"items", docs}});
  Tour::Say("every value is indexed as it is written: exact value, words (BM25), meaning (vectors)");
  t.Step({{"op", "search_by_value"}, {"value", "Bob"}},
         [](const json& r) { return r.value("ok", false) && Contains(r["result"], "doc:6") && !Contains(r["result"], "user:2"); });
  Tour::Say("exact value: user:2 was 'Bob' until the txn above, so only doc:6 remains");
  t.Step({{"op", "fulltext_search"}, {"query", "quick fox"}},
         [](const json& r) { return r.value("ok", false) && Contains(r["result"], "doc:1") && Contains(r["result"], "doc:5"); });
  Tour::Say("full text: 'foxes' matches 'fox' (stemming), 'Quick' matches 'quick' (case folding)");
  t.Step({{"op", "fulltext_search"}, {"query", "database"}},
         [](const json& r) { return r.value("ok", false) && Contains(r["result"], "doc:4"); });
  Tour::Say("inside a JSON object, every string leaf is text");
  t.Step({{"op", "semantic_search"}, {"query", "artificial intelligence"}, {"k", 3}, {"threshold", 0.2}},
         [](const json& r) { return r.value("ok", false) && !r["result"].empty() && r["result"][0]["key"] == "doc:3"; });
  Tour::Say("semantic: cosine similarity of embeddings (the built-in embedder: shared words and word forms)");

  Tour::Section("4. Stats");
  t.Step({{"op", "stats"}}, [](const json& r) {
    if (!r.value("ok", false)) return false;
    const json& s = r["result"];
    std::printf("   keys %s, wal_size %s bytes, writes %s, WAL fsyncs %s (concurrent writers share one), connections %s\n",
                s["keys"].dump().c_str(), s["wal_size"].dump().c_str(), s["writes"].dump().c_str(),
                s["wal_syncs"].dump().c_str(), s["connections"].dump().c_str());
    return s["keys"].get<int64_t>() >= 10;
  });

  Tour::Section("5. Persistence across a restart");
  Tour::Say("stopping the server with SIGTERM: it finishes in-flight requests, closes the store, exits 0");
  if (!server.Stop(SIGTERM)) {
    std::printf("   UNEXPECTED: kvserver did not exit 0 on SIGTERM\n");
    return 1;
  }
  if (!server.Start()) {
    std::printf("   UNEXPECTED: kvserver did not start again\n");
    return 1;
  }
  Tour::Say("started again on the same data directory; reading back:");
  t.Reconnect();
  t.Step({{"op", "get"}, {"key", "name"}}, ok_result("Alicia"));
  t.Step({{"op", "bulk_get"}, {"keys", {"user:1", "user:2", "user:4"}}},
         ok_result({{"user:1", "Alice"}, {"user:2", "Robert"}, {"user:4", "Dana"}}));
  t.Step({{"op", "fulltext_search"}, {"query", "quick fox"}},
         [](const json& r) { return r.value("ok", false) && r["result"].size() == 2; });
  Tour::Say("the data and its search indexes are back");
  bool stopped = server.Stop(SIGTERM);

  std::printf("\n%s\n", t.ok() && stopped ? "demo finished: every step answered as expected"
                                          : "demo FAILED: see UNEXPECTED above");
  return t.ok() && stopped ? 0 : 1;
}

void AddDemoCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<DemoOptions>();
  CLI::App* cmd = app.add_subcommand("demo", "a guided tour of kvserver: CRUD, bulk, search, persistence, stats");
  cmd->add_flag("--keep", o->keep, "keep the temporary data directory");
#ifdef KVBENCH_KVSERVER_PATH
  o->kvserver = KVBENCH_KVSERVER_PATH;
#endif
  cmd->add_option("--kvserver", o->kvserver, "the kvserver binary")->capture_default_str();
  cmd->callback([o, exit_code] { *exit_code = RunDemo(*o); });
}

}  // namespace kvbench
