#include "bench/cluster_bench.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/histogram.h"
#include "tests/support/procs.h"
#include "net/client.h"

namespace kvbench {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// One client's connection to a system. Set returns true only for an
// acknowledged (committed, durable on a majority) write.
class Writer {
 public:
  virtual ~Writer() = default;
  virtual bool Set(const std::string& key, const std::string& value) = 0;
};

class System {
 public:
  virtual ~System() = default;
  virtual const char* name() const = 0;
  virtual bool Start() = 0;
  // The node every running node names as leader, or -1.
  virtual int WaitForLeader(int timeout_ms) = 0;
  virtual void Kill(int i) = 0;
  virtual bool Restart(int i) = 0;
  // For the throughput run (straight to the leader) or the failover trials
  // (any node; moving on when one fails). t: the client's number.
  virtual std::unique_ptr<Writer> NewWriter(int t, bool failover) = 0;
};

// ---- kvstore ----------------------------------------------------------------

class KvWriter final : public Writer {
 public:
  KvWriter(kvstore::net::ClientOptions o, size_t value_size)
      : client_(std::move(o)), value_json_("\"" + std::string(value_size, 'v') + "\"") {}
  bool Set(const std::string& key, const std::string& value) override {
    std::string req = R"({"op":"set","key":")" + key + R"(","value":)" +
                      (value.empty() ? value_json_ : "\"" + value + "\"") + "}";
    kvstore::Status s = client_.Call(req, &response_);
    if (!s.ok()) {
      client_.Close();
      return false;
    }
    return response_.find("\"ok\":true") != std::string::npos;
  }

 private:
  kvstore::net::Client client_;
  std::string value_json_;
  std::string response_;
};

class KvSystem final : public System {
 public:
  KvSystem(const ClusterBenchOptions& o, const std::string& dir)
      : o_(o),
        cluster_(o.kvserver, dir,
                 {"--election-timeout-ms", std::to_string(o.election_timeout_ms), "--heartbeat-timeout-ms",
                  std::to_string(o.heartbeat_ms)}) {}
  const char* name() const override { return "kvstore"; }
  bool Start() override { return cluster_.StartAll() && (leader_ = cluster_.WaitForLeader()) >= 0; }
  int WaitForLeader(int timeout_ms) override { return leader_ = cluster_.WaitForLeader(timeout_ms); }
  void Kill(int i) override { cluster_.Kill(i); }
  bool Restart(int i) override { return cluster_.Start(i); }
  std::unique_ptr<Writer> NewWriter(int /*t*/, bool failover) override {
    kvstore::net::ClientOptions co;
    // The leader first (a follower would redirect there anyway).
    co.addresses = {cluster_.clients()[static_cast<size_t>(std::max(leader_, 0))]};
    for (const std::string& a : cluster_.clients()) {
      if (a != co.addresses[0]) co.addresses.push_back(a);
    }
    co.timeout_ms = failover ? o_.failover_timeout_ms : 30000;
    co.max_redirects = 3;
    co.failover_ms = failover ? 3000 : 0;
    return std::make_unique<KvWriter>(std::move(co), o_.value_size);
  }
  // How many of the acknowledged writes (key -> value) the cluster does not
  // return from a linearizable read on its leader.
  uint64_t CountLost(const std::map<std::string, std::string>& acked) {
    kvstore::net::ClientOptions co;
    co.addresses = {cluster_.clients()[static_cast<size_t>(std::max(leader_, 0))]};
    co.timeout_ms = 30000;  // 500 pipelined linearizable reads at a time
    kvstore::net::Client client(co);
    uint64_t lost = 0;
    std::vector<std::string> reqs, resps;
    std::vector<std::string> expect;
    auto check = [&] {
      if (reqs.empty()) return;
      if (!client.CallMany(reqs, &resps).ok()) {
        lost += reqs.size();
      } else {
        for (size_t i = 0; i < resps.size(); ++i) {
          if (resps[i].find("\"result\":\"" + expect[i] + "\"") == std::string::npos) ++lost;
        }
      }
      reqs.clear();
      expect.clear();
    };
    for (const auto& [k, v] : acked) {
      reqs.push_back(R"({"op":"get","key":")" + k + "\"}");
      expect.push_back(v);
      if (reqs.size() == 500) check();
    }
    check();
    return lost;
  }

 private:
  const ClusterBenchOptions& o_;
  ClusterProcess cluster_;
  int leader_ = -1;
};

// ---- etcd -------------------------------------------------------------------

class EtcdWriter final : public Writer {
 public:
  EtcdWriter(std::vector<std::string> addresses, size_t first, int timeout_ms, size_t value_size)
      : client_(std::move(addresses), first, timeout_ms), value_(value_size, 'v') {}
  bool Set(const std::string& key, const std::string& value) override {
    return client_.Put(key, value.empty() ? value_ : value);
  }

 private:
  EtcdClient client_;
  std::string value_;
};

class EtcdSystem final : public System {
 public:
  EtcdSystem(const ClusterBenchOptions& o, const std::string& dir)
      : o_(o), cluster_(o.etcd, dir, o.heartbeat_ms, o.election_timeout_ms) {}
  const char* name() const override { return "etcd"; }
  bool Start() override { return cluster_.StartAll() && (leader_ = cluster_.WaitForLeader()) >= 0; }
  int WaitForLeader(int timeout_ms) override { return leader_ = cluster_.WaitForLeader(timeout_ms); }
  void Kill(int i) override { cluster_.Kill(i); }
  bool Restart(int i) override { return cluster_.Start(i); }
  std::unique_ptr<Writer> NewWriter(int t, bool failover) override {
    std::vector<std::string> addresses = cluster_.clients();
    // Throughput: every client on the leader, as kvstore's are. Failover:
    // spread over the members (a follower forwards to the leader), each
    // client moving to the next member when its own fails.
    const size_t first = failover ? static_cast<size_t>(t) : static_cast<size_t>(std::max(leader_, 0));
    return std::make_unique<EtcdWriter>(std::move(addresses), first, failover ? o_.failover_timeout_ms : 30000,
                                        o_.value_size);
  }

 private:
  const ClusterBenchOptions& o_;
  EtcdCluster cluster_;
  int leader_ = -1;
};

// ---- the runs ---------------------------------------------------------------

std::string Key(const char* prefix, int client, uint64_t n) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s%03d-%012llu", prefix, client, static_cast<unsigned long long>(n));
  return buf;
}

struct SetResult {
  uint64_t ops = 0;
  uint64_t errors = 0;
  double seconds = 0;
  Histogram latency;
};

// clients threads, each one durable set at a time for o.seconds (after one
// untimed set to connect).
SetResult RunSet(System& sys, const ClusterBenchOptions& o) {
  std::vector<SetResult> per(static_cast<size_t>(o.clients));
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point deadline;
  std::vector<std::thread> threads;
  for (int c = 0; c < o.clients; ++c) {
    threads.emplace_back([&, c] {
      SetResult& r = per[static_cast<size_t>(c)];
      auto w = sys.NewWriter(c, false);
      uint64_t n = 0;
      w->Set(Key("s", c, n++), "");
      ready++;
      while (!go) std::this_thread::sleep_for(1ms);
      while (Clock::now() < deadline) {
        auto t0 = Clock::now();
        bool ok = w->Set(Key("s", c, n++), "");
        if (ok) {
          r.latency.Record(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
          r.ops++;
        } else {
          r.errors++;
        }
      }
    });
  }
  while (ready < o.clients) std::this_thread::sleep_for(1ms);
  const auto start = Clock::now();
  deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  go = true;
  for (auto& t : threads) t.join();
  SetResult total;
  total.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (const SetResult& r : per) {
    total.ops += r.ops;
    total.errors += r.errors;
    total.latency.Merge(r.latency);
  }
  return total;
}

struct FailoverResult {
  std::vector<double> ms;  // per trial that saw a write acknowledged
  int failed_trials = 0;
  uint64_t acked = 0;
  uint64_t failures = 0;
  std::map<std::string, std::string> acked_values;
};

// A steady write load while the leader is killed o.failover_trials times.
FailoverResult RunFailover(System& sys, const ClusterBenchOptions& o, bool* harness_ok) {
  FailoverResult result;
  std::mutex mu;
  std::vector<std::pair<Clock::time_point, Clock::time_point>> acks;  // (started, acknowledged)
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < o.failover_clients; ++c) {
    threads.emplace_back([&, c] {
      auto w = sys.NewWriter(c, true);
      for (uint64_t n = 0; !stop; ++n) {
        const std::string key = Key("f", c, n), value = std::to_string(n);
        const auto started = Clock::now();
        if (w->Set(key, value)) {
          std::lock_guard lock(mu);
          acks.push_back({started, Clock::now()});
          result.acked_values[key] = value;
        } else {
          failures++;
          // As the cluster tests' writers: a short pause, then on.
          std::this_thread::sleep_for(5ms);
        }
      }
    });
  }
  auto first_ack_after = [&](Clock::time_point t) {
    std::lock_guard lock(mu);
    std::optional<Clock::time_point> first;
    for (auto [started, acked_at] : acks) {
      if (started > t && (!first || acked_at < *first)) first = acked_at;
    }
    return first;
  };
  for (int trial = 0; trial < o.failover_trials && *harness_ok; ++trial) {
    std::this_thread::sleep_for(500ms);
    const int leader = sys.WaitForLeader(10000);
    if (leader < 0) {
      std::fprintf(stderr, "kvbench cluster: %s: no leader before trial %d\n", sys.name(), trial + 1);
      *harness_ok = false;
      break;
    }
    const auto killed_at = Clock::now();
    sys.Kill(leader);
    std::optional<Clock::time_point> first;
    while (!(first = first_ack_after(killed_at)) && Clock::now() - killed_at < 10s) {
      std::this_thread::sleep_for(2ms);
    }
    if (first) {
      result.ms.push_back(std::chrono::duration<double, std::milli>(*first - killed_at).count());
    } else {
      std::fprintf(stderr, "kvbench cluster: %s: no write acknowledged within 10 s of killing node %d\n",
                   sys.name(), leader + 1);
      result.failed_trials++;
    }
    if (!sys.Restart(leader) || sys.WaitForLeader(30000) < 0) {
      std::fprintf(stderr, "kvbench cluster: %s: node %d did not rejoin\n", sys.name(), leader + 1);
      *harness_ok = false;
    }
  }
  std::this_thread::sleep_for(200ms);
  stop = true;
  for (auto& t : threads) t.join();
  result.acked = acks.size();
  result.failures = failures;
  return result;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct Report {
  bool ran = false;
  SetResult set;
  FailoverResult failover;
  int64_t lost = -1;  // kvstore only: acknowledged failover writes not found afterwards
};

void PrintSet(const char* name, const SetResult& r, const ClusterBenchOptions& o) {
  const double rate = r.seconds > 0 ? static_cast<double>(r.ops) / r.seconds : 0;
  if (o.on_result) {
    ClusterResult c{.system = name, .workload = "set", .clients = o.clients, .ops = r.ops, .errors = r.errors,
                    .seconds = r.seconds, .ops_per_sec = rate, .p50_us = r.latency.Percentile(0.5) / 1000,
                    .p99_us = r.latency.Percentile(0.99) / 1000};
    return o.on_result(c);
  }
  if (o.json) {
    std::printf(
        "{\"engine\":\"%s\",\"nodes\":3,\"workload\":\"set\",\"clients\":%d,\"value_size\":%zu,\"ops\":%llu,"
        "\"errors\":%llu,\"seconds\":%.6f,\"ops_per_sec\":%.1f,\"p50_us\":%.3f,\"p99_us\":%.3f}\n",
        name, o.clients, o.value_size, static_cast<unsigned long long>(r.ops),
        static_cast<unsigned long long>(r.errors), r.seconds, rate, r.latency.Percentile(0.5) / 1000,
        r.latency.Percentile(0.99) / 1000);
  } else {
    std::printf("%-8s set      3 nodes, %3d clients: %9llu ops in %6.2f s = %9.1f ops/s, p50 %7.0f us, p99 %7.0f us, errors %llu\n",
                name, o.clients, static_cast<unsigned long long>(r.ops), r.seconds, rate,
                r.latency.Percentile(0.5) / 1000, r.latency.Percentile(0.99) / 1000,
                static_cast<unsigned long long>(r.errors));
  }
  std::fflush(stdout);
}

void PrintFailover(const char* name, const Report& rep, const ClusterBenchOptions& o) {
  const FailoverResult& f = rep.failover;
  std::vector<double> sorted = f.ms;
  std::sort(sorted.begin(), sorted.end());
  std::string list;
  for (double ms : f.ms) list += (list.empty() ? "" : ",") + std::to_string(static_cast<int>(ms + 0.5));
  if (o.on_result) {
    ClusterResult c{.system = name, .workload = "failover", .clients = o.failover_clients,
                    .trials = static_cast<int>(f.ms.size()) + f.failed_trials, .failed_trials = f.failed_trials,
                    .median_ms = Median(f.ms), .max_ms = sorted.empty() ? 0.0 : sorted.back(), .lost = rep.lost};
    return o.on_result(c);
  }
  if (o.json) {
    std::printf(
        "{\"engine\":\"%s\",\"nodes\":3,\"workload\":\"failover\",\"clients\":%d,\"timeout_ms\":%d,\"trials\":%d,"
        "\"failed_trials\":%d,\"failover_ms\":[%s],\"median_ms\":%.1f,\"max_ms\":%.1f,\"acked\":%llu,"
        "\"failed_or_unknown\":%llu%s}\n",
        name, o.failover_clients, o.failover_timeout_ms, static_cast<int>(f.ms.size()) + f.failed_trials, f.failed_trials, list.c_str(),
        Median(f.ms), sorted.empty() ? 0.0 : sorted.back(), static_cast<unsigned long long>(f.acked),
        static_cast<unsigned long long>(f.failures),
        rep.lost >= 0 ? (",\"lost\":" + std::to_string(rep.lost)).c_str() : "");
  } else {
    std::printf("%-8s failover (kill -9 of the leader -> first acknowledged write), ms: %s; median %.0f, max %.0f%s\n",
                name, list.c_str(), Median(f.ms), sorted.empty() ? 0.0 : sorted.back(),
                rep.lost >= 0 ? (", acknowledged writes lost: " + std::to_string(rep.lost)).c_str() : "");
  }
  std::fflush(stdout);
}

// Starts, measures and stops one system; false when the harness failed.
bool RunSystem(const std::string& which, const ClusterBenchOptions& o, Report* rep) {
  TempDir dir("kvbench-cluster-" + which);
  if (dir.path().empty()) return false;
  std::unique_ptr<System> sys;
  if (which == "kvstore") {
    sys = std::make_unique<KvSystem>(o, dir.path());
  } else {
    sys = std::make_unique<EtcdSystem>(o, dir.path());
  }
  if (!sys->Start()) {
    std::fprintf(stderr, "kvbench cluster: could not start a 3-node %s cluster (logs were in %s)\n", sys->name(),
                 dir.path().c_str());
    dir.keep();
    return false;
  }
  rep->ran = true;
  rep->set = RunSet(*sys, o);
  PrintSet(sys->name(), rep->set, o);
  bool ok = true;
  if (o.failover_trials > 0) {
    rep->failover = RunFailover(*sys, o, &ok);
    if (which == "kvstore" && ok && sys->WaitForLeader(10000) >= 0) {
      rep->lost = static_cast<int64_t>(static_cast<KvSystem*>(sys.get())->CountLost(rep->failover.acked_values));
    }
    PrintFailover(sys->name(), *rep, o);
  }
  return ok;
}

}  // namespace

int RunClusterBench(const ClusterBenchOptions& o) {
  std::map<std::string, Report> reports;
  int code = 0;
  for (const std::string& s : o.systems) {
    if (s == "etcd" && access(o.etcd.c_str(), X_OK) != 0) {
      std::fprintf(stderr, "kvbench cluster: %s is not there (Debian: apt-get install etcd-server)\n", o.etcd.c_str());
      code = 1;
      continue;
    }
    if (!RunSystem(s, o, &reports[s])) code = 1;
    const Report& r = reports[s];
    // A run that acknowledged nothing measured nothing.
    if (!r.ran || r.set.ops == 0) code = 1;
    if (o.failover_trials > 0 && (r.failover.failed_trials > 0 || r.failover.ms.empty())) code = 1;
    if (r.lost > 0) code = 1;
  }
  const Report& kv = reports["kvstore"];
  const Report& etcd = reports["etcd"];
  if (kv.ran && etcd.ran && kv.set.ops > 0 && etcd.set.ops > 0 && !o.on_result) {
    const double kv_rate = static_cast<double>(kv.set.ops) / kv.set.seconds;
    const double etcd_rate = static_cast<double>(etcd.set.ops) / etcd.set.seconds;
    const double ratio = kv_rate / etcd_rate;
    if (o.json) {
      std::printf("{\"ratio\":\"kvstore/etcd\",\"workload\":\"set\",\"clients\":%d,\"value\":%.3f}\n", o.clients, ratio);
    } else {
      std::printf("ratio    set: kvstore %.0f ops/s / etcd %.0f ops/s = %.2fx (target >= 2x)\n", kv_rate, etcd_rate,
                  ratio);
    }
    if (!kv.failover.ms.empty() && !etcd.failover.ms.empty()) {
      const double kv_ms = Median(kv.failover.ms), etcd_ms = Median(etcd.failover.ms);
      if (o.json) {
        std::printf("{\"ratio\":\"kvstore/etcd\",\"workload\":\"failover\",\"value\":%.3f}\n", kv_ms / etcd_ms);
      } else {
        std::printf("ratio    failover median: kvstore %.0f ms / etcd %.0f ms = %.2fx (target: each <= 1000 ms)\n",
                    kv_ms, etcd_ms, kv_ms / etcd_ms);
      }
    }
  }
  return code;
}

void AddClusterCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<ClusterBenchOptions>();
  CLI::App* cmd = app.add_subcommand("cluster", "a 3-node kvstore cluster against a 3-member etcd cluster: "
                                                "replicated sets and leader failover");
  cmd->add_option("--systems", o->systems, "kvstore, etcd; comma-separated, run in order")
      ->delimiter(',')
      ->check(CLI::IsMember({"kvstore", "etcd"}))
      ->capture_default_str();
  cmd->add_option("--clients", o->clients, "connections for the set run, one thread each")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--seconds", o->seconds, "length of the set run")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--value-size", o->value_size, "value bytes")->capture_default_str();
  cmd->add_option("--failover-trials", o->failover_trials, "kill -9 of the leader, this many times per system")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--failover-clients", o->failover_clients, "writers during the failover trials")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--failover-timeout-ms", o->failover_timeout_ms,
                  "a failover writer gives up on a write after this and tries again")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--election-timeout-ms", o->election_timeout_ms, "for both systems")->capture_default_str();
  cmd->add_option("--heartbeat-ms", o->heartbeat_ms, "for both systems")->capture_default_str();
  cmd->add_flag("--json", o->json, "one JSON object per result line");
#ifdef KVBENCH_KVSERVER_PATH
  o->kvserver = KVBENCH_KVSERVER_PATH;
#endif
  cmd->add_option("--kvserver", o->kvserver, "the kvserver binary")->capture_default_str();
  cmd->add_option("--etcd", o->etcd, "the etcd binary (3.4)")->capture_default_str();
  cmd->callback([o, exit_code] { *exit_code = RunClusterBench(*o); });
}

}  // namespace kvbench
