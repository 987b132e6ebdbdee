#include "bench/acid.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "tests/support/procs.h"
#include "net/client.h"

namespace kvbench {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// What the tests run against: one kvserver, or a cluster whose leader is the
// one killed.
class Target {
 public:
  virtual ~Target() = default;
  virtual bool Start() = 0;
  virtual bool Crash() = 0;    // kill -9 (the leader)
  virtual bool Recover() = 0;  // restart what Crash killed, and wait until it serves
  virtual std::vector<std::string> addresses() const = 0;
  virtual bool cluster() const = 0;

  kvstore::net::ClientOptions client_options() const {
    kvstore::net::ClientOptions o;
    o.addresses = addresses();
    o.timeout_ms = 5000;
    // A cluster client waits out the election after the leader dies; a
    // single server's client just fails until the restart.
    o.failover_ms = cluster() ? 3000 : 0;
    return o;
  }
};

class SingleTarget : public Target {
 public:
  SingleTarget(const std::string& binary, const std::string& dir) : server_(binary, dir + "/data") {}
  bool Start() override { return server_.Start(); }
  bool Crash() override { return server_.Stop(SIGKILL) || true; }
  bool Recover() override { return server_.Start(); }
  std::vector<std::string> addresses() const override { return {server_.address()}; }
  bool cluster() const override { return false; }

 private:
  ServerProcess server_;
};

class ClusterTarget : public Target {
 public:
  ClusterTarget(const std::string& binary, const std::string& dir) : cluster_(binary, dir) {}
  bool Start() override { return cluster_.StartAll() && cluster_.WaitForLeader() >= 0; }
  bool Crash() override {
    killed_ = cluster_.WaitForLeader();
    if (killed_ < 0) return false;
    cluster_.Kill(killed_);
    return true;
  }
  bool Recover() override {
    if (killed_ >= 0 && !cluster_.Start(killed_)) return false;
    killed_ = -1;
    return cluster_.WaitForLeader() >= 0;
  }
  std::vector<std::string> addresses() const override { return cluster_.clients(); }
  bool cluster() const override { return true; }

 private:
  ClusterProcess cluster_;
  int killed_ = -1;
};

// A client that answers parsed JSON, or nullopt when the exchange failed
// (connection refused or broken: the outcome of a write is then unknown).
class Conn {
 public:
  explicit Conn(const Target& t) : client_(t.client_options()), pipeline_(!t.cluster()) {}
  std::optional<json> Call(const json& request) {
    std::string response;
    if (!client_.Call(request.dump(), &response).ok()) {
      client_.Close();
      return std::nullopt;
    }
    json r = json::parse(response, nullptr, false);
    if (r.is_discarded()) return std::nullopt;
    return r;
  }
  // Pipelined; nullopt when any exchange failed.
  std::optional<std::vector<json>> CallMany(const std::vector<json>& requests) {
    if (!pipeline_) {
      // Pipelines are not redirected; one at a time, each finds the leader.
      std::vector<json> out;
      for (const json& request : requests) {
        auto r = Call(request);
        if (!r) return std::nullopt;
        out.push_back(std::move(*r));
      }
      return out;
    }
    std::vector<std::string> lines, responses;
    for (const json& r : requests) lines.push_back(r.dump());
    if (!client_.CallMany(lines, &responses).ok()) {
      client_.Close();
      return std::nullopt;
    }
    std::vector<json> out;
    for (const auto& r : responses) out.push_back(json::parse(r, nullptr, false));
    return out;
  }

 private:
  kvstore::net::Client client_;
  bool pipeline_;
};

bool Ok(const std::optional<json>& r) { return r && r->is_object() && r->value("ok", false); }

std::string Pad(uint64_t n, int width) {
  std::string s = std::to_string(n);
  return std::string(s.size() < static_cast<size_t>(width) ? width - s.size() : 0, '0') + s;
}

std::string AtomKey(uint64_t batch, int j) { return "atom:" + Pad(batch, 8) + ":" + Pad(j, 3); }
std::string AccountKey(int a) { return "acct:" + Pad(a, 4); }

constexpr int64_t kInitialBalance = 1000;

// Everything the crash phase wrote and was told.
struct Ledger {
  std::mutex mu;
  std::map<uint64_t, bool> batches;          // batch id -> acknowledged
  std::vector<std::pair<std::string, uint64_t>> durable;  // acknowledged sets
  uint64_t sets_unknown = 0;
  uint64_t transfers_acked = 0;
  uint64_t consistency_reads = 0;
  uint64_t consistency_violations = 0;
  int64_t max_deviation = 0;  // the largest |total - expected| seen
  std::atomic<uint64_t> next_batch{0};
};

// Reads every account at one snapshot: the sum, or nullopt when the read
// failed. A missing or non-integer account makes the sum wrong on purpose.
std::optional<int64_t> TotalBalance(Conn& c, int accounts, std::string* detail) {
  json keys = json::array();
  for (int a = 0; a < accounts; ++a) keys.push_back(AccountKey(a));
  auto r = c.Call({{"op", "bulk_get"}, {"keys", keys}});
  if (!Ok(r)) return std::nullopt;
  int64_t total = 0;
  const json& res = (*r)["result"];
  if (res.size() != static_cast<size_t>(accounts)) *detail = "only " + std::to_string(res.size()) + " accounts";
  for (const auto& [k, v] : res.items()) total += v.is_number_integer() ? v.get<int64_t>() : -1000000;
  return total;
}

void AtomicityWriter(const Target& t, const AcidOptions& o, Ledger* ledger, const std::atomic<bool>* stop,
                     uint64_t seed) {
  Conn c(t);
  std::mt19937_64 rng(seed);
  while (!*stop) {
    const uint64_t id = ledger->next_batch++;
    json items = json::array(), sets = json::array();
    for (int j = 0; j < o.batch_keys; ++j) {
      json value = {{"batch", id}, {"i", j}};
      items.push_back({AtomKey(id, j), value});
      sets.push_back({{"op", "set"}, {"key", AtomKey(id, j)}, {"value", value}});
    }
    json request;
    if (rng() % 2 == 0) {
      request = {{"op", "bulk_set"}, {"items", items}};
    } else {
      request = {{"op", "txn"},
                 {"compare", json::array({{{"key", AtomKey(id, 0)}, {"exists", false}}})},
                 {"success", sets}};
    }
    {
      std::lock_guard lock(ledger->mu);
      ledger->batches[id] = false;
    }
    auto r = c.Call(request);
    bool acked = Ok(r) && (request["op"] == "bulk_set" || (*r)["result"].value("succeeded", false));
    if (acked) {
      std::lock_guard lock(ledger->mu);
      ledger->batches[id] = true;
    } else {
      std::this_thread::sleep_for(10ms);
    }
  }
}

void DurabilityWriter(const Target& t, int writer, uint64_t* counter, Ledger* ledger, const std::atomic<bool>* stop) {
  Conn c(t);
  while (!*stop) {
    // A pipeline of 8 shares fsyncs; each response is its own acknowledgement.
    std::vector<json> requests;
    std::vector<std::string> keys;
    for (int i = 0; i < 8; ++i) {
      uint64_t n = (*counter)++;
      keys.push_back("dur:" + std::to_string(writer) + ":" + Pad(n, 9));
      requests.push_back({{"op", "set"}, {"key", keys.back()}, {"value", n}});
    }
    auto rs = c.CallMany(requests);
    std::lock_guard lock(ledger->mu);
    if (!rs) {
      ledger->sets_unknown += requests.size();
    } else {
      for (size_t i = 0; i < rs->size(); ++i) {
        if (Ok((*rs)[i])) ledger->durable.emplace_back(keys[i], requests[i]["value"].get<uint64_t>());
      }
    }
    if (!rs) std::this_thread::sleep_for(10ms);
  }
}

void Transferer(const Target& t, const AcidOptions& o, Ledger* ledger, const std::atomic<bool>* stop, uint64_t seed) {
  Conn c(t);
  std::mt19937_64 rng(seed);
  while (!*stop) {
    int a = static_cast<int>(rng() % o.accounts), b = static_cast<int>(rng() % o.accounts);
    if (a == b) continue;
    auto r = c.Call({{"op", "bulk_get"}, {"keys", {AccountKey(a), AccountKey(b)}}});
    if (!Ok(r)) {
      std::this_thread::sleep_for(10ms);
      continue;
    }
    const json& res = (*r)["result"];
    if (!res.contains(AccountKey(a)) || !res.contains(AccountKey(b))) continue;
    int64_t va = res[AccountKey(a)].get<int64_t>(), vb = res[AccountKey(b)].get<int64_t>();
    int64_t amount = std::min<int64_t>(va, 1 + static_cast<int64_t>(rng() % 50));
    // Compare both balances: the transfer applies only to what was read.
    auto w = c.Call({{"op", "txn"},
                     {"compare", {{{"key", AccountKey(a)}, {"value", va}}, {{"key", AccountKey(b)}, {"value", vb}}}},
                     {"success",
                      {{{"op", "set"}, {"key", AccountKey(a)}, {"value", va - amount}},
                       {{"op", "set"}, {"key", AccountKey(b)}, {"value", vb + amount}}}}});
    if (Ok(w) && (*w)["result"].value("succeeded", false)) {
      std::lock_guard lock(ledger->mu);
      ledger->transfers_acked++;
    } else if (!w) {
      std::this_thread::sleep_for(10ms);
    }
  }
}

void BalanceReader(const Target& t, const AcidOptions& o, Ledger* ledger, const std::atomic<bool>* stop) {
  Conn c(t);
  const int64_t want = kInitialBalance * o.accounts;
  while (!*stop) {
    std::string detail;
    auto total = TotalBalance(c, o.accounts, &detail);
    if (!total) {
      std::this_thread::sleep_for(10ms);
      continue;
    }
    std::lock_guard lock(ledger->mu);
    ledger->consistency_reads++;
    if (*total != want) {
      ledger->max_deviation = std::max(ledger->max_deviation, std::abs(*total - want));
      if (ledger->consistency_violations++ < 5) {
        std::fprintf(stderr, "consistency: total %lld, want %lld %s\n", static_cast<long long>(*total),
                     static_cast<long long>(want), detail.c_str());
      }
    }
  }
}

struct Counts {
  uint64_t acknowledged = 0, checked = 0, lost = 0, unknown = 0, bad = 0;
};

// After a restart: every batch written so far is whole or absent; every
// acknowledged one is whole.
bool CheckBatches(Conn& c, const AcidOptions& o, Ledger* ledger, Counts* counts) {
  std::vector<std::pair<uint64_t, bool>> batches;
  {
    std::lock_guard lock(ledger->mu);
    batches.assign(ledger->batches.begin(), ledger->batches.end());
  }
  *counts = {};
  for (size_t i = 0; i < batches.size(); i += 32) {
    std::vector<json> requests;
    for (size_t b = i; b < std::min(batches.size(), i + 32); ++b) {
      json keys = json::array();
      for (int j = 0; j < o.batch_keys; ++j) keys.push_back(AtomKey(batches[b].first, j));
      requests.push_back({{"op", "bulk_get"}, {"keys", keys}});
    }
    auto rs = c.CallMany(requests);
    if (!rs) return false;
    for (size_t k = 0; k < rs->size(); ++k) {
      auto [id, acked] = batches[i + k];
      if (!Ok((*rs)[k])) return false;
      const json& res = (*rs)[k]["result"];
      size_t present = 0;
      for (const auto& [key, v] : res.items()) {
        if (v.is_object() && v.value("batch", UINT64_MAX) == id) ++present;
      }
      counts->checked++;
      if (acked) counts->acknowledged++;
      if (!acked) counts->unknown++;
      if (present != 0 && present != static_cast<size_t>(o.batch_keys)) {
        if (counts->bad++ < 5) std::fprintf(stderr, "atomicity: batch %llu has %zu of %d keys\n",
                                            static_cast<unsigned long long>(id), present, o.batch_keys);
      } else if (acked && present == 0) {
        if (counts->lost++ < 5) std::fprintf(stderr, "atomicity: acknowledged batch %llu is gone\n",
                                             static_cast<unsigned long long>(id));
      }
    }
  }
  return true;
}

bool CheckDurable(Conn& c, Ledger* ledger, Counts* counts) {
  std::vector<std::pair<std::string, uint64_t>> durable;
  {
    std::lock_guard lock(ledger->mu);
    durable = ledger->durable;
    counts->unknown = ledger->sets_unknown;
  }
  counts->acknowledged = durable.size();
  counts->checked = 0;
  counts->lost = 0;
  for (size_t i = 0; i < durable.size(); i += 1000) {
    json keys = json::array();
    for (size_t k = i; k < std::min(durable.size(), i + 1000); ++k) keys.push_back(durable[k].first);
    auto r = c.Call({{"op", "bulk_get"}, {"keys", keys}});
    if (!Ok(r)) return false;
    const json& res = (*r)["result"];
    for (size_t k = i; k < std::min(durable.size(), i + 1000); ++k) {
      counts->checked++;
      auto it = res.find(durable[k].first);
      if (it == res.end() || *it != durable[k].second) {
        if (counts->lost++ < 5) std::fprintf(stderr, "durability: acknowledged %s = %llu is lost\n",
                                             durable[k].first.c_str(),
                                             static_cast<unsigned long long>(durable[k].second));
      }
    }
  }
  return true;
}

// Retries a read-only check across a failover.
template <typename F>
bool Retry(F f) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    if (f()) return true;
    std::this_thread::sleep_for(250ms);
  }
  return false;
}

const char* Verdict(bool pass) { return pass ? "PASS" : "FAIL"; }

// Isolation: batch writers and readers of the same key groups, and cas
// increment loops, all at once for o.isolation_seconds.
bool RunIsolation(const Target& t, const AcidOptions& o, uint64_t seed) {
  constexpr int kGroups = 4, kCounters = 4, kIncrementers = 4;
  const int k = std::min(o.batch_keys, 20);
  auto group_key = [](int g, int j) { return "iso:" + std::to_string(g) + ":" + Pad(j, 3); };
  Conn setup(t);
  json init = json::array();
  for (int g = 0; g < kGroups; ++g) {
    for (int j = 0; j < k; ++j) init.push_back({group_key(g, j), 0});
  }
  for (int n = 0; n < kCounters; ++n) init.push_back({"ctr:" + std::to_string(n), 0});
  if (!Ok(setup.Call({{"op", "bulk_set"}, {"items", init}}))) {
    std::printf("isolation    FAIL  could not initialize\n");
    return false;
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, torn{0}, batches{0}, increments{0}, conflicts{0}, unknown{0};
  std::vector<std::atomic<uint64_t>> per_counter(kCounters);
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      Conn c(t);
      std::mt19937_64 rng(seed + 100 + w);
      for (uint64_t v = 1; !stop; ++v) {
        int g = static_cast<int>(rng() % kGroups);
        int64_t version = static_cast<int64_t>(v * 2 + w);  // distinct per writer
        json items = json::array(), sets = json::array();
        for (int j = 0; j < k; ++j) {
          items.push_back({group_key(g, j), version});
          sets.push_back({{"op", "set"}, {"key", group_key(g, j)}, {"value", version}});
        }
        json req = v % 2 ? json{{"op", "bulk_set"}, {"items", items}}
                         : json{{"op", "txn"}, {"compare", json::array()}, {"success", sets}};
        if (Ok(c.Call(req))) batches++;
      }
    });
  }
  for (int rdr = 0; rdr < 2; ++rdr) {
    threads.emplace_back([&, rdr] {
      Conn c(t);
      std::mt19937_64 rng(seed + 200 + rdr);
      while (!stop) {
        int g = static_cast<int>(rng() % kGroups);
        std::vector<json> values;
        std::optional<json> r;
        if (rng() % 2) {
          json keys = json::array();
          for (int j = 0; j < k; ++j) keys.push_back(group_key(g, j));
          r = c.Call({{"op", "bulk_get"}, {"keys", keys}});
          if (Ok(r)) for (const auto& [key, v] : (*r)["result"].items()) values.push_back(v);
        } else {
          r = c.Call({{"op", "scan"}, {"prefix", "iso:" + std::to_string(g) + ":"}, {"limit", k + 1}});
          if (Ok(r)) for (const auto& item : (*r)["result"]["items"]) values.push_back(item["value"]);
        }
        if (!Ok(r)) continue;
        reads++;
        bool whole = values.size() == static_cast<size_t>(k);
        for (const auto& v : values) whole = whole && v == values[0];
        if (!whole && torn++ < 5) std::fprintf(stderr, "isolation: group %d read torn: %s\n", g, r->dump().substr(0, 300).c_str());
      }
    });
  }
  for (int i = 0; i < kIncrementers; ++i) {
    threads.emplace_back([&, i] {
      Conn c(t);
      std::mt19937_64 rng(seed + 300 + i);
      while (!stop) {
        int n = static_cast<int>(rng() % kCounters);
        const std::string key = "ctr:" + std::to_string(n);
        auto g = c.Call({{"op", "get"}, {"key", key}});
        if (!Ok(g)) continue;
        int64_t v = (*g)["result"].get<int64_t>();
        // Retry on conflict from the value the server says is current.
        for (int attempt = 0; attempt < 100 && !stop; ++attempt) {
          auto r = c.Call({{"op", "cas"}, {"key", key}, {"expected", v}, {"value", v + 1}});
          if (Ok(r)) {
            increments++;
            per_counter[n]++;
            break;
          }
          if (!r || !r->contains("error") || (*r)["error"].value("code", "") != "conflict") {
            if (unknown++ < 3) std::fprintf(stderr, "isolation: cas answered %s\n", r ? r->dump().c_str() : "nothing (connection failed)");
            break;
          }
          conflicts++;
          v = (*r)["error"]["current"].get<int64_t>();
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(o.isolation_seconds));
  stop = true;
  for (auto& th : threads) th.join();
  // Each counter ends at exactly its acknowledged increments.
  json keys = json::array();
  for (int n = 0; n < kCounters; ++n) keys.push_back("ctr:" + std::to_string(n));
  std::optional<json> r;
  Retry([&] { return Ok(r = setup.Call({{"op", "bulk_get"}, {"keys", keys}})); });
  uint64_t checked = 0, lost = 0, extra = 0;
  for (int n = 0; n < kCounters && Ok(r); ++n) {
    int64_t have = (*r)["result"].value("ctr:" + std::to_string(n), int64_t{-1});
    int64_t want = static_cast<int64_t>(per_counter[n].load());
    checked++;
    if (have < want) lost += static_cast<uint64_t>(want - have);
    // An increment whose answer was lost may have applied: only then is more allowed.
    if (have > want + static_cast<int64_t>(unknown.load())) extra += static_cast<uint64_t>(have - want);
  }
  const bool read_pass = torn == 0 && reads > 0;
  const bool cas_pass = Ok(r) && lost == 0 && extra == 0 && increments > 0;
  std::printf("isolation    %s  batch reads: batches acknowledged %llu, reads checked %llu, torn %llu\n",
              Verdict(read_pass), static_cast<unsigned long long>(batches.load()),
              static_cast<unsigned long long>(reads.load()), static_cast<unsigned long long>(torn.load()));
  std::printf("isolation    %s  cas counters: increments acknowledged %llu (conflicts retried %llu, unknown %llu), "
              "counters checked %llu, lost %llu, extra %llu\n",
              Verdict(cas_pass), static_cast<unsigned long long>(increments.load()),
              static_cast<unsigned long long>(conflicts.load()), static_cast<unsigned long long>(unknown.load()),
              static_cast<unsigned long long>(checked), static_cast<unsigned long long>(lost),
              static_cast<unsigned long long>(extra));
  return read_pass && cas_pass;
}

}  // namespace

int RunAcid(const AcidOptions& o) {
  uint64_t seed = o.seed != 0 ? o.seed : std::random_device{}();
  std::mt19937_64 rng(seed);
  TempDir dir("kvbench-acid");
  if (o.keep) dir.keep();
  std::unique_ptr<Target> target;
  if (o.cluster) {
    target = std::make_unique<ClusterTarget>(o.kvserver, dir.path());
  } else {
    target = std::make_unique<SingleTarget>(o.kvserver, dir.path());
  }
  std::printf("kvbench acid: %s, %d kill -9 cycles, %d keys per batch, seed %llu, data in %s%s\n",
              o.cluster ? "3-node cluster (the leader is killed)" : "one kvserver", o.cycles, o.batch_keys,
              static_cast<unsigned long long>(seed), dir.path().c_str(), o.keep ? " (kept)" : "");
  std::fflush(stdout);
  if (dir.path().empty() || !target->Start()) {
    std::fprintf(stderr, "kvbench acid: could not start %s\n", o.kvserver.c_str());
    return 1;
  }
  Conn check(*target);
  json accounts = json::array();
  for (int a = 0; a < o.accounts; ++a) accounts.push_back({AccountKey(a), kInitialBalance});
  if (!Retry([&] { return Ok(check.Call({{"op", "bulk_set"}, {"items", accounts}})); })) {
    std::fprintf(stderr, "kvbench acid: could not create the accounts\n");
    return 1;
  }

  Ledger ledger;
  std::vector<uint64_t> dur_counters(2, 0);
  Counts atom, dur;
  uint64_t crash_checks = 0, crash_violations = 0;
  bool harness_ok = true;
  for (int cycle = 0; cycle < o.cycles && harness_ok; ++cycle) {
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int w = 0; w < 2; ++w) threads.emplace_back(AtomicityWriter, std::cref(*target), std::cref(o), &ledger, &stop, rng());
    for (int w = 0; w < 2; ++w) threads.emplace_back(DurabilityWriter, std::cref(*target), w, &dur_counters[w], &ledger, &stop);
    for (int w = 0; w < 2; ++w) threads.emplace_back(Transferer, std::cref(*target), std::cref(o), &ledger, &stop, rng());
    threads.emplace_back(BalanceReader, std::cref(*target), std::cref(o), &ledger, &stop);
    const int run_ms = o.min_run_ms + static_cast<int>(rng() % static_cast<uint64_t>(std::max(1, o.max_run_ms - o.min_run_ms)));
    std::this_thread::sleep_for(std::chrono::milliseconds(run_ms));
    harness_ok = target->Crash();
    // In a cluster the load carries on through the election.
    std::this_thread::sleep_for(target->cluster() ? 800ms : 50ms);
    stop = true;
    for (auto& th : threads) th.join();
    harness_ok = harness_ok && target->Recover();
    if (!harness_ok) {
      std::fprintf(stderr, "kvbench acid: could not restart after cycle %d\n", cycle + 1);
      break;
    }
    std::string detail;
    std::optional<int64_t> total;
    harness_ok = Retry([&] { return CheckBatches(check, o, &ledger, &atom); }) &&
                 Retry([&] { return CheckDurable(check, &ledger, &dur); }) &&
                 Retry([&] { return (total = TotalBalance(check, o.accounts, &detail)).has_value(); });
    if (!harness_ok) {
      std::fprintf(stderr, "kvbench acid: could not read back after cycle %d\n", cycle + 1);
      break;
    }
    crash_checks++;
    if (*total != kInitialBalance * o.accounts) {
      crash_violations++;
      ledger.max_deviation = std::max(ledger.max_deviation, std::abs(*total - kInitialBalance * o.accounts));
      std::fprintf(stderr, "consistency: after crash %d the total is %lld %s\n", cycle + 1,
                   static_cast<long long>(*total), detail.c_str());
    }
    std::fprintf(stderr, "cycle %d/%d: killed after %d ms; batches %llu, sets acknowledged %llu, transfers %llu%s\n",
                 cycle + 1, o.cycles, run_ms, static_cast<unsigned long long>(atom.checked),
                 static_cast<unsigned long long>(dur.acknowledged),
                 static_cast<unsigned long long>(ledger.transfers_acked),
                 atom.lost + atom.bad + dur.lost + crash_violations > 0 ? "  LOSS" : "");
  }

  bool pass = harness_ok;
  const bool atom_pass = harness_ok && atom.lost == 0 && atom.bad == 0 && atom.acknowledged > 0;
  std::printf("atomicity    %s  batches acknowledged %llu, checked %llu (outcome unknown %llu), lost %llu, partial %llu"
              " (bulk_set and txn of %d keys, %d kill -9)\n",
              Verdict(atom_pass), static_cast<unsigned long long>(atom.acknowledged),
              static_cast<unsigned long long>(atom.checked), static_cast<unsigned long long>(atom.unknown),
              static_cast<unsigned long long>(atom.lost), static_cast<unsigned long long>(atom.bad), o.batch_keys,
              o.cycles);
  const bool dur_pass = harness_ok && dur.lost == 0 && dur.acknowledged > 0;
  std::printf("durability   %s  writes acknowledged %llu, checked %llu (outcome unknown %llu), lost %llu\n",
              Verdict(dur_pass), static_cast<unsigned long long>(dur.acknowledged),
              static_cast<unsigned long long>(dur.checked), static_cast<unsigned long long>(dur.unknown),
              static_cast<unsigned long long>(dur.lost));
  const bool cons_pass = harness_ok && ledger.consistency_violations == 0 && crash_violations == 0 &&
                         ledger.transfers_acked > 0;
  std::printf("consistency  %s  transfers acknowledged %llu, totals checked %llu (%llu after crashes), "
              "violations %llu, lost %lld of the total %lld\n",
              Verdict(cons_pass), static_cast<unsigned long long>(ledger.transfers_acked),
              static_cast<unsigned long long>(ledger.consistency_reads + crash_checks),
              static_cast<unsigned long long>(crash_checks),
              static_cast<unsigned long long>(ledger.consistency_violations + crash_violations),
              static_cast<long long>(ledger.max_deviation), static_cast<long long>(kInitialBalance * o.accounts));
  std::fflush(stdout);
  pass = atom_pass && dur_pass && cons_pass;
  if (harness_ok) pass = RunIsolation(*target, o, seed) && pass;
  std::printf("%s\n", pass ? "ACID: all PASS" : "ACID: FAIL");
  if (!pass && !o.keep) {
    dir.keep();
    std::printf("data kept in %s\n", dir.path().c_str());
  }
  return pass ? 0 : 1;
}

void AddAcidCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<AcidOptions>();
  CLI::App* cmd = app.add_subcommand("acid", "the ACID suite: kill -9 a kvserver (or a cluster's leader) under load and check");
  cmd->add_flag("--cluster", o->cluster, "run against a 3-node cluster it starts; the leader is killed");
  cmd->add_option("--cycles", o->cycles, "kill -9 cycles")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--min-run-ms", o->min_run_ms, "load before a kill, at least")->capture_default_str();
  cmd->add_option("--max-run-ms", o->max_run_ms, "load before a kill, at most")->capture_default_str();
  cmd->add_option("--isolation-seconds", o->isolation_seconds, "length of the isolation phase")->capture_default_str();
  cmd->add_option("--batch-keys", o->batch_keys, "keys per batch")->check(CLI::Range(2, 999))->capture_default_str();
  cmd->add_option("--accounts", o->accounts, "accounts for the transfer txns")->check(CLI::Range(2, 10000))->capture_default_str();
  cmd->add_option("--seed", o->seed, "random seed (0: random, printed)");
  cmd->add_flag("--keep", o->keep, "keep the data directories (they are kept anyway on FAIL)");
#ifdef KVBENCH_KVSERVER_PATH
  o->kvserver = KVBENCH_KVSERVER_PATH;
#endif
  cmd->add_option("--kvserver", o->kvserver, "the kvserver binary")->capture_default_str();
  cmd->callback([o, exit_code] { *exit_code = RunAcid(*o); });
}

}  // namespace kvbench
