// The crash loop through the server: several client connections write
// single sets, bulk_sets and txns to a kvserver child and record each write
// the server acknowledged; the loop kill -9s the server at a random moment,
// restarts it on the same data directory, and reads everything back through
// the server: every acknowledged write must be there in full, and no write,
// acknowledged or not, may be there in part.
//
// Every write is a batch of n keys "b<id>-<j>" whose values are all
// "<id>:<n>", so that the keys found say on their own which batch they came
// from and how large it was (a single set is a batch of one).
#include "tests/crash_server.h"

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/client.h"
#include "tests/support/procs.h"

namespace crash_loop {

namespace {

using json = nlohmann::json;

std::string BatchKey(uint64_t id, uint32_t j) { return "b" + std::to_string(id) + "-" + std::to_string(j); }

// One writer connection until the server goes away: a mix of single sets,
// bulk_sets and txns (a txn with no compares always takes its success
// branch). A request whose connection fails has an unknown outcome and is
// not recorded; the writer stops there.
void Writer(const std::string& address, uint64_t base_id, uint64_t seed, std::mutex* mu,
            std::map<uint64_t, uint32_t>* acked) {
  kvstore::net::Client client({.addresses = {address}, .timeout_ms = 5000, .token = {}, .max_redirects = 0});
  std::mt19937_64 rng(seed);
  for (uint64_t i = 0;; i++) {
    const uint64_t id = base_id + i;
    const int kind = static_cast<int>(rng() % 3);
    const uint32_t n = kind == 0 ? 1 : 2 + static_cast<uint32_t>(rng() % 15);
    const std::string value = std::to_string(id) + ":" + std::to_string(n);
    json request;
    if (kind == 0) {
      request = {{"op", "set"}, {"key", BatchKey(id, 0)}, {"value", value}};
    } else if (kind == 1) {
      json items = json::array();
      for (uint32_t j = 0; j < n; j++) items.push_back({BatchKey(id, j), value});
      request = {{"op", "bulk_set"}, {"items", items}};
    } else {
      json ops = json::array();
      for (uint32_t j = 0; j < n; j++) ops.push_back({{"op", "set"}, {"key", BatchKey(id, j)}, {"value", value}});
      request = {{"op", "txn"}, {"compare", json::array()}, {"success", ops}, {"failure", json::array()}};
    }
    std::string response;
    if (!client.Call(request.dump(), &response).ok()) return;  // killed: outcome unknown
    json r = json::parse(response, nullptr, false);
    if (r.is_discarded() || !r.value("ok", false)) {
      std::fprintf(stderr, "crash_loop(server): write refused: %s\n", response.c_str());
      return;
    }
    std::lock_guard lock(*mu);
    (*acked)[id] = n;
  }
}

struct Totals {
  uint64_t acknowledged = 0, lost = 0, partial = 0;
};

// Reads every key back through the server (scan, page by page) and checks
// acked against it.
bool Verify(const std::string& address, const std::map<uint64_t, uint32_t>& acked, Totals* totals,
            uint64_t* keys_read) {
  kvstore::net::Client client({.addresses = {address}, .timeout_ms = 30000, .token = {}, .max_redirects = 0});
  std::map<uint64_t, std::pair<uint32_t, uint32_t>> seen;  // id -> (size, keys found)
  std::string start;
  *keys_read = 0;
  for (;;) {
    std::string response;
    kvstore::Status s =
        client.Call(json{{"op", "scan"}, {"start", start}, {"limit", 10000}}.dump(), &response);
    if (!s.ok()) {
      std::fprintf(stderr, "crash_loop(server): scan: %s\n", s.ToString().c_str());
      return false;
    }
    json r = json::parse(response, nullptr, false);
    if (r.is_discarded() || !r.value("ok", false)) {
      std::fprintf(stderr, "crash_loop(server): scan failed: %s\n", response.substr(0, 300).c_str());
      return false;
    }
    const json& items = r["result"]["items"];
    for (const json& item : items) {
      const std::string value = item["value"].is_string() ? item["value"].get<std::string>() : "";
      uint64_t id;
      uint32_t n;
      if (std::sscanf(value.c_str(), "%lu:%u", &id, &n) != 2) {
        std::fprintf(stderr, "crash_loop(server): unreadable value under %s\n", item["key"].dump().c_str());
        return false;
      }
      auto& e = seen[id];
      e.first = n;
      e.second++;
      ++*keys_read;
    }
    if (!r["result"].value("more", false) || items.empty()) break;
    start = items.back()["key"].get<std::string>() + std::string(1, '\0');
  }
  for (const auto& [id, n] : acked) {
    auto f = seen.find(id);
    const uint32_t found = f == seen.end() ? 0 : f->second.second;
    if (found != n) {
      if (totals->lost < 5) {
        std::fprintf(stderr, "crash_loop(server): LOST acknowledged write %lu (%u of %u keys)\n", id, found, n);
      }
      totals->lost++;
    }
  }
  for (const auto& [id, e] : seen) {
    if (e.first != e.second) {
      if (totals->partial < 5) {
        std::fprintf(stderr, "crash_loop(server): PARTIAL write %lu: %u of %u keys\n", id, e.second, e.first);
      }
      totals->partial++;
    }
  }
  return true;
}

}  // namespace

int RunServerLoop(const ServerLoopOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);
  kvbench::TempDir scratch("kvstore_crash_server");
  const std::string data = o.dir.empty() ? scratch.path() + "/data" : o.dir;
  if (o.keep) scratch.keep();
  std::filesystem::remove_all(data);
  std::printf("crash_loop(server): data=%s seed=%lu clients=%d\n", data.c_str(), o.seed, o.clients);
  std::fflush(stdout);
  std::mt19937_64 rng(o.seed);
  // Two server threads: the writers' requests really run side by side.
  kvbench::ServerProcess server(o.kvserver, data, {"--threads", "2"});
  std::map<uint64_t, uint32_t> acked;
  Totals totals;
  int done = 0;
  bool ok = true;
  for (int c = 0; c < o.cycles && ok; c++) {
    // A fresh store now and then bounds what each read-back scans, while
    // still recovering from several crashes in a row.
    if (c % 10 == 0) {
      totals.acknowledged += acked.size();
      acked.clear();
      std::filesystem::remove_all(data);
    }
    if (!server.Start()) {
      std::fprintf(stderr, "crash_loop(server): kvserver did not start (log: %s)\n", server.log_path().c_str());
      ok = false;
      break;
    }
    std::mutex mu;
    const size_t before = acked.size();
    std::vector<std::thread> writers;
    for (int t = 0; t < o.clients; t++) {
      const uint64_t base_id = ((static_cast<uint64_t>(c) + 1) << 40) + (static_cast<uint64_t>(t) << 28);
      writers.emplace_back(Writer, server.address(), base_id, rng(), &mu, &acked);
    }
    const int run_ms = 50 + static_cast<int>(rng() % 450);
    std::this_thread::sleep_for(std::chrono::milliseconds(run_ms));
    // On a loaded machine (or under ASan) the first fsyncs can take longer
    // than the run: a cycle kills only once something was acknowledged.
    for (int waited = 0; waited < 10000; waited += 10) {
      {
        std::lock_guard lock(mu);
        if (acked.size() > before) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    server.Stop(SIGKILL);
    for (auto& w : writers) w.join();
    const size_t this_cycle = acked.size() - before;
    // Restart on the same directory and read everything back.
    uint64_t keys = 0;
    if (!server.Start()) {
      std::fprintf(stderr, "crash_loop(server): kvserver did not restart (log: %s)\n", server.log_path().c_str());
      ok = false;
    } else {
      ok = Verify(server.address(), acked, &totals, &keys);
      server.Stop(SIGKILL);  // the next cycle starts it again
    }
    done++;
    std::printf("cycle %d: killed %d+ ms after start, %zu writes acknowledged, %lu keys read back, lost so far %lu, "
                "partial so far %lu\n",
                c + 1, run_ms, this_cycle, keys, totals.lost, totals.partial);
    std::fflush(stdout);
    if (ok && this_cycle == 0) {
      std::fprintf(stderr, "crash_loop(server): no write was acknowledged in cycle %d\n", c + 1);
      ok = false;
    }
  }
  totals.acknowledged += acked.size();
  std::printf("crash_loop(server): cycles=%d acknowledged=%lu lost=%lu partial=%lu\n", done, totals.acknowledged,
              totals.lost, totals.partial);
  if (!o.keep && o.dir.empty()) std::filesystem::remove_all(data);
  return ok && totals.lost == 0 && totals.partial == 0 ? 0 : 1;
}

}  // namespace crash_loop
