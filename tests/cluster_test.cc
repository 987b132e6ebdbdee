// Cluster tests: three real kvserver --cluster processes on 127.0.0.1, on
// ports picked free by the test, each stopped (SIGKILL and reaped) by the
// test however it ends. Writers go through net::Client with every node's
// address, so they follow redirects and ride out elections.
//
//   KVSTORE_CLUSTER_CYCLES=N   kill -9 cycles in KillLeaderUnderLoad (default 5)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/client.h"
#include "tests/support/procs.h"

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

using kvbench::FreePort;

std::string Addr(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

// Sends one request to one node (no redirects, short timeout); nullopt when
// the exchange failed.
std::optional<json> Ask(const std::string& address, const json& request, int timeout_ms = 1000) {
  kvstore::net::Client c({.addresses = {address}, .timeout_ms = timeout_ms, .token = {}, .max_redirects = 0});
  std::string response;
  if (!c.Call(request.dump(), &response).ok()) return std::nullopt;
  json r = json::parse(response, nullptr, false);
  if (r.is_discarded()) return std::nullopt;
  return r;
}

// Test hooks ("NAME=value") in the environment for the nodes started while
// this lives; they inherit them, later nodes do not.
class TestHooks {
 public:
  explicit TestHooks(std::vector<std::string> hooks) : hooks_(std::move(hooks)) {
    for (const std::string& h : hooks_) ::setenv(Name(h).c_str(), h.substr(h.find('=') + 1).c_str(), 1);
  }
  ~TestHooks() {
    for (const std::string& h : hooks_) ::unsetenv(Name(h).c_str());
  }
  TestHooks(const TestHooks&) = delete;
  TestHooks& operator=(const TestHooks&) = delete;

 private:
  static std::string Name(const std::string& hook) { return hook.substr(0, hook.find('=')); }
  std::vector<std::string> hooks_;
};

class Cluster {
 public:
  explicit Cluster(std::vector<std::string> extra = {}) : extra_(std::move(extra)) {
    dir_ = fs::temp_directory_path() / ("kvstore_cluster_test_" + std::to_string(getpid()) + "_" +
                                        std::to_string(counter_++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (int i = 0; i < 3; ++i) {
      clients_.push_back(Addr(FreePort()));
      rafts_.push_back(Addr(FreePort()));
      transfers_.push_back(Addr(FreePort()));
    }
    pids_.assign(3, -1);
  }
  ~Cluster() {
    for (int i = 0; i < 3; ++i) Kill(i, SIGKILL);
    if (!HasFailure()) fs::remove_all(dir_);
  }
  static bool HasFailure() { return ::testing::Test::HasFailure(); }

  const std::vector<std::string>& clients() const { return clients_; }

  void Start(int i) {
    ASSERT_EQ(pids_[i], -1);
    std::vector<std::string> args = {
        KVSERVER_PATH, "--cluster", "--node-id", std::to_string(i + 1), "--peers", Join(rafts_),
        "--peer-clients", Join(clients_), "--peer-transfers", Join(transfers_), "--host", "127.0.0.1",
        "--port", clients_[i].substr(clients_[i].rfind(':') + 1), "--data-dir",
        (dir_ / ("node_" + std::to_string(i + 1))).string(), "--log-level", "info", "--threads", "2"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    int out[2];
    ASSERT_EQ(pipe(out), 0);
    const std::string log = (dir_ / ("node_" + std::to_string(i + 1) + ".log")).string();
    pid_t pid = fork();
    if (pid == 0) {
      dup2(out[1], 1);
      int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (err >= 0) dup2(err, 2);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    std::string line;
    char c;
    pollfd p{out[0], POLLIN, 0};
    while (line.find('\n') == std::string::npos && poll(&p, 1, 10000) == 1 && read(out[0], &c, 1) == 1) {
      line += c;
    }
    close(out[0]);
    pids_[i] = pid;
    ASSERT_EQ(line.rfind("listening ", 0), 0u) << "node " << i + 1 << " did not start; see " << log;
  }
  void StartAll() {
    for (int i = 0; i < 3; ++i) Start(i);
  }
  void Kill(int i, int sig) {
    if (pids_[i] <= 0) return;
    if (stopped_[i]) ::kill(pids_[i], SIGCONT);
    ::kill(pids_[i], sig);
    int status;
    waitpid(pids_[i], &status, 0);
    pids_[i] = -1;
    stopped_[i] = false;
  }
  // SIGTERM, then waits up to timeout for the node to exit; true when it
  // exited 0 in time (it is killed otherwise).
  bool Terminate(int i, std::chrono::milliseconds timeout) {
    if (pids_[i] <= 0) return false;
    ::kill(pids_[i], SIGTERM);
    int status = 0;
    bool exited = false;
    for (auto end = Clock::now() + timeout; Clock::now() < end; std::this_thread::sleep_for(20ms)) {
      if (waitpid(pids_[i], &status, WNOHANG) == pids_[i]) {
        exited = true;
        break;
      }
    }
    if (!exited) {
      ::kill(pids_[i], SIGKILL);
      waitpid(pids_[i], &status, 0);
    }
    pids_[i] = -1;
    return exited && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  void Pause(int i) {
    ::kill(pids_[i], SIGSTOP);
    stopped_[i] = true;
  }
  void Resume(int i) {
    ::kill(pids_[i], SIGCONT);
    stopped_[i] = false;
  }
  bool running(int i) const { return pids_[i] > 0 && !stopped_[i]; }

  std::optional<json> Stats(int i) {
    auto r = Ask(clients_[i], {{"op", "stats"}}, 500);
    if (!r || !(*r)["ok"].get<bool>()) return std::nullopt;
    return (*r)["result"]["cluster"];
  }
  // The node every running node agrees is the leader, or -1 after timeout.
  int WaitForLeader(std::chrono::milliseconds timeout = 10s) {
    auto end = Clock::now() + timeout;
    while (Clock::now() < end) {
      int leader = -1;
      bool agreed = true;
      for (int i = 0; i < 3; ++i) {
        if (!running(i)) continue;
        auto s = Stats(i);
        if (!s) {
          agreed = false;
          break;
        }
        if ((*s)["role"] == "leader") leader = i;
        int id = (*s)["leader_id"].get<int>();
        if (id == 0 || (leader >= 0 && id != leader + 1)) agreed = false;
      }
      if (agreed && leader >= 0) return leader;
      std::this_thread::sleep_for(20ms);
    }
    return -1;
  }
  // Every key and value node i holds, read with "stale":true.
  std::optional<std::map<std::string, std::string>> Contents(int i) {
    std::map<std::string, std::string> out;
    std::string start;
    for (;;) {
      auto r = Ask(clients_[i], {{"op", "scan"}, {"start", start}, {"limit", 100000}, {"stale", true}}, 10000);
      if (!r || !(*r)["ok"].get<bool>()) return std::nullopt;
      const json& res = (*r)["result"];
      for (const json& item : res["items"]) out[item["key"].get<std::string>()] = item["value"].dump();
      if (!res["more"].get<bool>()) return out;
      start = res["items"].back()["key"].get<std::string>() + std::string(1, '\0');
    }
  }
  // Waits until every running node holds the same contents; returns them.
  std::map<std::string, std::string> WaitConverged(std::chrono::milliseconds timeout = 20s) {
    auto end = Clock::now() + timeout;
    std::vector<std::optional<std::map<std::string, std::string>>> all;
    while (Clock::now() < end) {
      all.clear();
      for (int i = 0; i < 3; ++i) {
        if (running(i)) all.push_back(Contents(i));
      }
      bool same = !all.empty() && all[0].has_value();
      for (auto& c : all) same = same && c.has_value() && *c == *all[0];
      if (same) return *all[0];
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "nodes did not converge";
    for (size_t i = 0; i < all.size(); ++i) {
      ADD_FAILURE() << "node #" << i << ": " << (all[i] ? std::to_string(all[i]->size()) + " keys" : "unreadable");
    }
    return {};
  }

 private:
  static inline int counter_ = 0;
  std::vector<std::string> extra_;
  fs::path dir_;
  std::vector<std::string> clients_, rafts_, transfers_;
  std::vector<pid_t> pids_;
  bool stopped_[3] = {false, false, false};
};

kvstore::net::Client ClusterClient(const Cluster& c) {
  return kvstore::net::Client(
      {.addresses = c.clients(), .timeout_ms = 2000, .token = {}, .max_redirects = 3, .failover_ms = 3000});
}

bool IsOk(const std::string& response) { return response.find("\"ok\":true") != std::string::npos; }

TEST(ClusterTest, ElectionAndReplication) {
  Cluster c;
  c.StartAll();
  int leader = c.WaitForLeader();
  ASSERT_GE(leader, 0);
  auto client = ClusterClient(c);
  std::string r;
  for (int i = 0; i < 300; ++i) {
    ASSERT_TRUE(client.Call(json{{"op", "set"}, {"key", "k" + std::to_string(i)}, {"value", i}}.dump(), &r).ok());
    ASSERT_TRUE(IsOk(r)) << r;
  }
  // cas and txn are decided in the log: the same outcome on every node.
  ASSERT_TRUE(client.Call(R"({"op":"cas","key":"k1","expected":1,"value":"one"})", &r).ok());
  EXPECT_TRUE(IsOk(r)) << r;
  ASSERT_TRUE(client.Call(R"({"op":"cas","key":"k1","expected":1,"value":"uno"})", &r).ok());
  EXPECT_NE(r.find("conflict"), std::string::npos) << r;
  ASSERT_TRUE(client.Call(R"({"op":"txn","compare":[{"key":"k2","value":2}],"success":[{"op":"delete","key":"k2"}]})", &r).ok());
  EXPECT_NE(r.find("\"succeeded\":true"), std::string::npos) << r;
  // A write resent under its request_id applies once and answers as it did.
  for (int attempt = 0; attempt < 2; ++attempt) {
    ASSERT_TRUE(client.Call(R"({"op":"cas","key":"k3","expected":3,"value":"three","request_id":"t1"})", &r).ok());
    EXPECT_TRUE(IsOk(r)) << "attempt " << attempt << ": " << r;
  }
  // A follower redirects, or with "stale" answers from its own state.
  const int follower = (leader + 1) % 3;
  auto a = Ask(c.clients()[follower], {{"op", "set"}, {"key", "x"}, {"value", 1}});
  ASSERT_TRUE(a);
  EXPECT_EQ((*a)["error"]["code"], "not_leader");
  EXPECT_EQ((*a)["error"]["leader"], c.clients()[leader]);
  auto contents = c.WaitConverged();
  EXPECT_EQ(contents.size(), 299u);
  EXPECT_EQ(contents["k1"], "\"one\"");
  EXPECT_EQ(contents["k3"], "\"three\"");
  EXPECT_EQ(contents.count("k2"), 0u);
  auto s = Ask(c.clients()[follower], {{"op", "get"}, {"key", "k1"}, {"stale", true}});
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)["result"], "one");
  // Stats name the role, term, leader and the peers' match indexes.
  auto st = c.Stats(leader);
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)["role"], "leader");
  EXPECT_GE((*st)["term"].get<int>(), 1);
  EXPECT_EQ((*st)["peers"].size(), 3u);
  EXPECT_GE((*st)["peers"][follower]["match_index"].get<uint64_t>(), (*st)["commit_index"].get<uint64_t>() - 5);
  // Leadership moves on request.
  ASSERT_TRUE(client.Call(json{{"op", "transfer_leader"}, {"to", follower + 1}}.dump(), &r).ok());
  EXPECT_TRUE(IsOk(r)) << r;
  int now = -1;
  for (auto end = Clock::now() + 3s; Clock::now() < end && now != follower;) now = c.WaitForLeader();
  EXPECT_EQ(now, follower);
}

// Writers with unique keys; every acknowledged one is remembered.
struct WriteLoad {
  explicit WriteLoad(const Cluster& c, int writers) {
    for (int t = 0; t < writers; ++t) {
      threads.emplace_back([this, &c, t] {
        auto client = ClusterClient(c);
        std::string r;
        for (uint64_t n = 0; !stop; ++n) {
          const std::string key = "w" + std::to_string(t) + "-" + std::to_string(n);
          const auto started = Clock::now();
          kvstore::Status s = client.Call(json{{"op", "set"}, {"key", key}, {"value", n}}.dump(), &r);
          if (s.ok() && IsOk(r)) {
            std::lock_guard lock(mu);
            acked[key] = std::to_string(n);
            acks.push_back({started, Clock::now()});
          } else {
            failures++;
            if (!s.ok()) client.Close();
            std::this_thread::sleep_for(5ms);
          }
        }
      });
    }
  }
  ~WriteLoad() { Stop(); }
  void Stop() {
    stop = true;
    for (auto& t : threads) {
      if (t.joinable()) t.join();
    }
  }
  // The first acknowledgement of a write started after t.
  std::optional<Clock::time_point> FirstAckAfter(Clock::time_point t) {
    std::lock_guard lock(mu);
    std::optional<Clock::time_point> first;
    for (auto [started, acked_at] : acks) {
      if (started > t && (!first || acked_at < *first)) first = acked_at;
    }
    return first;
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> failures{0};
  std::mutex mu;
  std::map<std::string, std::string> acked;
  std::vector<std::pair<Clock::time_point, Clock::time_point>> acks;  // (started, acknowledged)
  std::vector<std::thread> threads;
};

TEST(ClusterTest, KillLeaderUnderLoad) {
  const char* env = std::getenv("KVSTORE_CLUSTER_CYCLES");
  const int cycles = env != nullptr ? std::atoi(env) : 5;
  Cluster c({"--snapshot-threshold", "300", "--snapshot-trailing", "200"});
  c.StartAll();
  ASSERT_GE(c.WaitForLeader(), 0);
  WriteLoad load(c, 4);
  std::vector<double> failover_ms;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    std::this_thread::sleep_for(400ms);
    int leader = c.WaitForLeader();
    ASSERT_GE(leader, 0) << "cycle " << cycle;
    const auto killed_at = Clock::now();
    c.Kill(leader, SIGKILL);
    // A new leader takes writes within 2 s.
    std::optional<Clock::time_point> first;
    while (!(first = load.FirstAckAfter(killed_at)) && Clock::now() - killed_at < 5s) {
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_TRUE(first) << "no write acknowledged after killing node " << leader + 1;
    const double ms = std::chrono::duration<double, std::milli>(*first - killed_at).count();
    failover_ms.push_back(ms);
    EXPECT_LT(ms, 2000) << "cycle " << cycle;
    c.Start(leader);
  }
  std::this_thread::sleep_for(300ms);
  load.Stop();
  std::sort(failover_ms.begin(), failover_ms.end());
  std::string figures;
  for (double ms : failover_ms) figures += std::to_string(static_cast<int>(ms)) + " ";
  std::printf("failover (kill -9 -> first acknowledged write), ms: %s(median %d)\n", figures.c_str(),
              static_cast<int>(failover_ms[failover_ms.size() / 2]));
  std::printf("acknowledged writes: %zu, failed or unknown: %llu\n", load.acked.size(),
              static_cast<unsigned long long>(load.failures.load()));
  ASSERT_GE(c.WaitForLeader(), 0);
  auto contents = c.WaitConverged(30s);
  size_t missing = 0;
  for (const auto& [k, v] : load.acked) {
    auto it = contents.find(k);
    if (it == contents.end() || it->second != v) {
      if (++missing < 10) ADD_FAILURE() << "acknowledged write lost: " << k << " = " << v;
    }
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_GT(load.acked.size(), 100u);
}

TEST(ClusterTest, FollowerFarBehindInstallsSnapshot) {
  Cluster c({"--snapshot-threshold", "200", "--snapshot-trailing", "100"});
  c.StartAll();
  int leader = c.WaitForLeader();
  ASSERT_GE(leader, 0);
  const int follower = (leader + 1) % 3;
  c.Kill(follower, SIGKILL);
  // 60k writes, pipelined (a few hundred log entries: many snapshots).
  // Every set is idempotent, and leadership may move while snapshots are
  // taken on a slow (sanitized) build: single calls follow it to the other
  // live node. (Pipelined batches go to the first address, the leader.)
  kvstore::net::ClientOptions o;
  o.addresses = {c.clients()[leader], c.clients()[(leader + 2) % 3]};
  o.timeout_ms = 10000;
  o.failover_ms = 10000;
  kvstore::net::Client client(o);
  std::vector<std::string> batch, responses;
  for (int i = 0; i < 60000; ++i) {
    batch.push_back(json{{"op", "set"}, {"key", "s" + std::to_string(i)}, {"value", i}}.dump());
    if (batch.size() == 500) {
      ASSERT_TRUE(client.CallMany(batch, &responses).ok());
      for (const auto& r : responses) ASSERT_TRUE(IsOk(r)) << r;
      batch.clear();
    }
  }
  // Small entries too, so the leader's log moves on past its snapshots.
  std::string r;
  for (int i = 0; i < 400; ++i) {
    ASSERT_TRUE(client.Call(json{{"op", "set"}, {"key", "t" + std::to_string(i)}, {"value", i}}.dump(), &r).ok());
  }
  auto st = c.Stats(leader);
  ASSERT_TRUE(st);
  EXPECT_GE((*st)["snapshots_taken"].get<int>(), 1);
  c.Start(follower);
  auto contents = c.WaitConverged(30s);
  EXPECT_EQ(contents.size(), 60400u);
  auto fs = c.Stats(follower);
  ASSERT_TRUE(fs);
  EXPECT_GE((*fs)["snapshots_installed"].get<int>(), 1) << fs->dump();
}

// A checkpoint of a large store takes a while to make. It is made off the
// Raft loop thread, so heartbeats and applying go on meanwhile: with every
// checkpoint taking 1.5 s (five election timeouts; a test hook in the node),
// the leader keeps its leadership through several snapshots.
TEST(ClusterTest, SlowSnapshotsDoNotMoveLeadership) {
  Cluster c({"--snapshot-threshold", "100", "--snapshot-trailing", "100"});
  {
    TestHooks hooks({"KVSTORE_TEST_SNAPSHOT_DELAY_MS=1500"});
    c.StartAll();
  }
  const int leader = c.WaitForLeader();
  ASSERT_GE(leader, 0);
  auto before = c.Stats(leader);
  ASSERT_TRUE(before);
  const uint64_t term = (*before)["term"].get<uint64_t>();
  auto client = ClusterClient(c);
  std::string r;
  // One log entry per set (one at a time), so snapshots come every 100 writes.
  const auto until = Clock::now() + 4s;
  int writes = 0;
  while (Clock::now() < until) {
    ASSERT_TRUE(client.Call(json{{"op", "set"}, {"key", "k" + std::to_string(writes)}, {"value", writes}}.dump(), &r).ok());
    ASSERT_TRUE(IsOk(r)) << r;
    ++writes;
  }
  std::optional<json> after;
  for (auto end = Clock::now() + 5s; Clock::now() < end; std::this_thread::sleep_for(100ms)) {
    after = c.Stats(leader);
    if (after && (*after)["snapshots_taken"].get<int>() >= 2) break;
  }
  ASSERT_TRUE(after);
  EXPECT_GE((*after)["snapshots_taken"].get<int>(), 2) << after->dump();
  EXPECT_EQ((*after)["role"], "leader") << after->dump();
  EXPECT_EQ((*after)["term"].get<uint64_t>(), term) << "an election happened during the snapshots";
  EXPECT_GT(writes, 300);
  EXPECT_EQ(c.WaitConverged(30s).size(), static_cast<size_t>(writes));
}

// A node told to stop while a snapshot's checkpoint is being made on a
// worker thread stops cleanly, and soon: Stop closes libraft only after the
// snapshot's finalize callback (libraft stores the snapshot once the worker
// is done, so closing before that would leave it working on a closed node).
TEST(ClusterTest, StopWaitsForASnapshotInProgress) {
  Cluster c({"--snapshot-threshold", "100", "--snapshot-trailing", "100"});
  {
    TestHooks hooks({"KVSTORE_TEST_SNAPSHOT_DELAY_MS=1500"});
    c.StartAll();
  }
  const int leader = c.WaitForLeader();
  ASSERT_GE(leader, 0);
  auto client = ClusterClient(c);
  std::string r;
  for (int i = 0; i < 150; ++i) {
    ASSERT_TRUE(client.Call(json{{"op", "set"}, {"key", "k" + std::to_string(i)}, {"value", i}}.dump(), &r).ok());
  }
  // Every node is now making its checkpoint at index ~100 (1.5 s each).
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(c.Terminate(i, 10s)) << "node " << i + 1 << " did not stop cleanly";
}

// Kills node down, then sets r0..r999 one at a time through addresses (the
// leader and the other live node): enough log for the leader to have moved
// its snapshots past where down left off.
void WriteWhileDown(Cluster& c, int down, std::vector<std::string> addresses) {
  c.Kill(down, SIGKILL);
  kvstore::net::ClientOptions o;
  o.addresses = std::move(addresses);
  o.timeout_ms = 10000;
  o.failover_ms = 10000;
  kvstore::net::Client client(o);
  std::string r;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(client.Call(json{{"op", "set"}, {"key", "r" + std::to_string(i)}, {"value", i}}.dump(), &r).ok());
    ASSERT_TRUE(IsOk(r)) << r;
  }
}

// Starts node i with the given test hooks in its environment and waits
// until it is installing a snapshot (true) or 10 s passed.
bool StartInstalling(Cluster& c, int i, const std::vector<std::string>& hooks) {
  {
    TestHooks set(hooks);
    c.Start(i);
  }
  for (auto end = Clock::now() + 10s; Clock::now() < end; std::this_thread::sleep_for(20ms)) {
    auto st = c.Stats(i);
    if (st && (*st)["snapshot_installing"].get<bool>()) return true;
  }
  return false;
}

// The install still succeeds when the checkpoint's holders refuse the first
// fetches (as restarting or busy ones would): the follower tries the peers
// again, with backoff, until it has the checkpoint (libraft already counts
// the snapshot as applied, so it never gives up).
TEST(ClusterTest, SnapshotInstallRetriesTheFetch) {
  Cluster c({"--snapshot-threshold", "200", "--snapshot-trailing", "100"});
  {
    TestHooks hooks({"KVSTORE_TEST_TRANSFER_FAIL_LISTS=2"});
    c.StartAll();
  }
  int leader = c.WaitForLeader();
  ASSERT_GE(leader, 0);
  const int follower = (leader + 1) % 3;
  ASSERT_NO_FATAL_FAILURE(WriteWhileDown(c, follower, {c.clients()[leader], c.clients()[(leader + 2) % 3]}));
  c.Start(follower);
  EXPECT_EQ(c.WaitConverged(30s).size(), 1000u);
  auto fs = c.Stats(follower);
  ASSERT_TRUE(fs);
  EXPECT_GE((*fs)["snapshots_installed"].get<int>(), 1) << fs->dump();
  EXPECT_FALSE((*fs)["snapshot_installing"].get<bool>()) << fs->dump();
}

// A follower installing a snapshot goes on voting and following (the fetch
// runs beside libraft, not inside its restore callback): when the node that
// holds the checkpoint is killed in the middle of the install, the other two
// elect a leader within the usual bound, and the installing follower gets
// the checkpoint, or a newer one, from the survivor and catches up.
TEST(ClusterTest, SnapshotInstallOutlivesItsHolder) {
  // The survivor refuses the first LIST: it often holds a checkpoint of the
  // same id (snapshots fall at the same indexes), and the follower must then
  // ask it for one at least as new (NEWEST) instead.
  Cluster c({"--snapshot-threshold", "200", "--snapshot-trailing", "100"});
  {
    TestHooks hooks({"KVSTORE_TEST_TRANSFER_FAIL_LISTS=1"});
    c.StartAll();
  }
  const int leader = c.WaitForLeader();
  ASSERT_GE(leader, 0);
  const int follower = (leader + 1) % 3, other = (leader + 2) % 3;
  ASSERT_NO_FATAL_FAILURE(WriteWhileDown(c, follower, {c.clients()[leader], c.clients()[other]}));
  // The install's fetch waits 2.5 s first, as a large one would take.
  ASSERT_TRUE(StartInstalling(c, follower, {"KVSTORE_TEST_INSTALL_DELAY_MS=2500"}))
      << "the restarted follower never started installing a snapshot";
  std::string r;

  const auto killed_at = Clock::now();
  c.Kill(leader, SIGKILL);
  kvstore::net::ClientOptions o2;
  o2.addresses = {c.clients()[other], c.clients()[follower]};
  o2.timeout_ms = 5000;
  o2.failover_ms = 5000;
  kvstore::net::Client survivors(o2);
  int after = 0;
  std::optional<double> first_ack_ms;
  while (Clock::now() - killed_at < 15s && after < 200) {
    if (survivors.Call(json{{"op", "set"}, {"key", "a" + std::to_string(after)}, {"value", after}}.dump(), &r).ok() &&
        IsOk(r)) {
      if (!first_ack_ms) first_ack_ms = std::chrono::duration<double, std::milli>(Clock::now() - killed_at).count();
      ++after;
    } else {
      std::this_thread::sleep_for(5ms);
    }
  }
  ASSERT_TRUE(first_ack_ms) << "no write acknowledged after the holder died";
  std::printf("failover while a follower installs: first write acknowledged after %d ms\n",
              static_cast<int>(*first_ack_ms));
  EXPECT_LT(*first_ack_ms, 2000) << "the election waited for the install";
  EXPECT_EQ(after, 200);

  std::optional<json> fs;
  for (auto end = Clock::now() + 30s; Clock::now() < end; std::this_thread::sleep_for(50ms)) {
    fs = c.Stats(follower);
    if (fs && !(*fs)["snapshot_installing"].get<bool>()) break;
  }
  ASSERT_TRUE(fs);
  EXPECT_FALSE((*fs)["snapshot_installing"].get<bool>()) << fs->dump();
  EXPECT_GE((*fs)["snapshots_installed"].get<int>(), 1) << fs->dump();
  c.Start(leader);
  EXPECT_EQ(c.WaitConverged(30s).size(), 1200u);
}

// A node that leads while its snapshot install is still under way (here:
// leadership handed to it on purpose, and a test hook stops it from handing
// leadership on at once, as it otherwise does) takes writes into the log,
// but answers them, and reads, only once the installed store is in: a read
// must not see the empty store it had before.
TEST(ClusterTest, AnInstallingLeaderAnswersOnceItsStoreIsIn) {
  Cluster c({"--snapshot-threshold", "200", "--snapshot-trailing", "100"});
  c.StartAll();
  const int leader = c.WaitForLeader();
  ASSERT_GE(leader, 0);
  const int follower = (leader + 1) % 3;
  ASSERT_NO_FATAL_FAILURE(WriteWhileDown(c, follower, {c.clients()[leader]}));
  ASSERT_TRUE(StartInstalling(c, follower,
                              {"KVSTORE_TEST_INSTALL_DELAY_MS=2500", "KVSTORE_TEST_INSTALLING_KEEPS_LEADERSHIP=1"}))
      << "the restarted follower never started installing a snapshot";
  kvstore::net::ClientOptions o;
  o.addresses = {c.clients()[leader]};
  o.timeout_ms = 10000;
  kvstore::net::Client client(o);
  std::string r;
  // The transfer needs the follower's log caught up: retry for a moment.
  bool moved = false;
  for (auto end = Clock::now() + 5s; !moved && Clock::now() < end; std::this_thread::sleep_for(50ms)) {
    moved = client.Call(json{{"op", "transfer_leader"}, {"to", follower + 1}}.dump(), &r).ok() && IsOk(r);
  }
  ASSERT_TRUE(moved) << r;
  auto st = c.Stats(follower);
  ASSERT_TRUE(st);
  ASSERT_EQ((*st)["role"], "leader") << st->dump();
  EXPECT_TRUE((*st)["snapshot_installing"].get<bool>()) << "the install ended before the test could lead with it";

  kvstore::net::ClientOptions fo;
  fo.addresses = {c.clients()[follower]};
  fo.timeout_ms = 20000;
  kvstore::net::Client on_follower(fo);
  // Both wait for the store (in flight together).
  std::vector<std::string> responses;
  ASSERT_TRUE(on_follower.CallMany({R"({"op":"get","key":"r999"})", R"({"op":"set","key":"x","value":1})"},
                                   &responses).ok());
  ASSERT_EQ(responses.size(), 2u);
  EXPECT_EQ(json::parse(responses[0])["result"], 999) << responses[0];
  EXPECT_TRUE(IsOk(responses[1])) << responses[1];
  st = c.Stats(follower);
  ASSERT_TRUE(st);
  EXPECT_FALSE((*st)["snapshot_installing"].get<bool>()) << st->dump();
  EXPECT_EQ(c.WaitConverged(30s).size(), 1001u);
}

TEST(ClusterTest, PausedLeaderIsReplaced) {
  Cluster c;
  c.StartAll();
  int old = c.WaitForLeader();
  ASSERT_GE(old, 0);
  auto client = ClusterClient(c);
  std::string r;
  ASSERT_TRUE(client.Call(R"({"op":"set","key":"x","value":1})", &r).ok());
  ASSERT_TRUE(IsOk(r)) << r;
  c.Pause(old);  // a minority of one: cut off, but it does not know it
  const auto paused_at = Clock::now();
  int leader = c.WaitForLeader(5s);
  ASSERT_GE(leader, 0);
  ASSERT_NE(leader, old);
  std::printf("paused leader replaced in %d ms\n",
              static_cast<int>(std::chrono::duration<double, std::milli>(Clock::now() - paused_at).count()));
  // (The cluster client may still be waiting on the paused node: ask the
  // new leader directly.)
  auto set2 = Ask(c.clients()[leader], {{"op", "set"}, {"key", "x"}, {"value", 2}});
  ASSERT_TRUE(set2 && (*set2)["ok"].get<bool>());
  // Requests sent to the old leader while it is paused are read on resume,
  // when it still believes it leads: neither the write nor the read may
  // succeed (the read would be stale).
  std::optional<json> wrote, read;
  std::thread t1([&] { wrote = Ask(c.clients()[old], {{"op", "set"}, {"key", "y"}, {"value", 1}}, 5000); });
  std::thread t2([&] { read = Ask(c.clients()[old], {{"op", "get"}, {"key", "x"}}, 5000); });
  std::this_thread::sleep_for(200ms);
  c.Resume(old);
  t1.join();
  t2.join();
  if (wrote) {
    EXPECT_FALSE((*wrote)["ok"].get<bool>()) << wrote->dump();
  }
  if (read) {
    EXPECT_TRUE(!(*read)["ok"].get<bool>() || (*read)["result"] == 2) << read->dump();
  }
  auto contents = c.WaitConverged();
  EXPECT_EQ(contents["x"], "2");
  EXPECT_EQ(contents.count("y"), 0u);
}


// ---- linearizability ---------------------------------------------------------
//
// A per-key register history checked with the Wing-Gong search as improved by
// Lowe (and used by Porcupine): events in time order in a linked list; try to
// linearize the earliest pending call whose effect the model accepts, caching
// (linearized set, state) pairs already explored, and backtrack at a return
// whose call could not be placed.

struct RegOp {
  bool write;
  std::optional<std::string> value;  // written, or read (nullopt: absent)
  Clock::time_point invoke, response;  // response = max() when unknown
};

bool Linearizable(const std::vector<RegOp>& ops) {
  const size_t n = ops.size();
  struct Event {
    size_t op;
    bool call;
    Clock::time_point t;
    int prev = -1, next = -1;
    int match = -1;  // call <-> its return
  };
  std::vector<Event> ev;
  for (size_t i = 0; i < n; ++i) {
    ev.push_back({i, true, ops[i].invoke});
    ev.push_back({i, false, ops[i].response});
  }
  std::stable_sort(ev.begin(), ev.end(), [](const Event& a, const Event& b) {
    if (a.t != b.t) return a.t < b.t;
    return a.call && !b.call;  // overlapping at a tie: the more permissive order
  });
  std::vector<int> call_of(n), ret_of(n);
  for (size_t i = 0; i < ev.size(); ++i) (ev[i].call ? call_of : ret_of)[ev[i].op] = static_cast<int>(i);
  // A list with a sentinel head at index ev.size().
  ev.push_back({n, true, {}});
  const int head = static_cast<int>(ev.size()) - 1;
  for (int i = 0; i < head; ++i) {
    ev[i].prev = i == 0 ? head : i - 1;
    ev[i].next = i + 1 < head ? i + 1 : -1;
  }
  ev[head].next = head > 0 ? 0 : -1;
  for (size_t i = 0; i < n; ++i) {
    ev[call_of[i]].match = ret_of[i];
    ev[ret_of[i]].match = call_of[i];
  }
  auto unlink = [&](int e) {
    ev[ev[e].prev].next = ev[e].next;
    if (ev[e].next >= 0) ev[ev[e].next].prev = ev[e].prev;
  };
  auto relink = [&](int e) {
    ev[ev[e].prev].next = e;
    if (ev[e].next >= 0) ev[ev[e].next].prev = e;
  };
  std::vector<uint64_t> linearized((n + 63) / 64, 0);
  struct Key {
    std::vector<uint64_t> bits;
    std::optional<std::string> state;
    bool operator==(const Key&) const = default;
  };
  struct Hash {
    size_t operator()(const Key& k) const {
      size_t h = std::hash<std::string>()(k.state.value_or(std::string("\x01") + "absent"));
      for (uint64_t w : k.bits) h = h * 1000003 ^ std::hash<uint64_t>()(w);
      return h;
    }
  };
  std::unordered_set<Key, Hash> cache;
  std::optional<std::string> state;
  std::vector<std::pair<int, std::optional<std::string>>> stack;  // (call event, state before)
  int e = ev[head].next;
  while (ev[head].next >= 0) {
    if (e < 0) return false;
    if (ev[e].call) {
      const RegOp& op = ops[ev[e].op];
      const bool ok = op.write || op.value == state;
      if (ok) {
        std::vector<uint64_t> bits = linearized;
        bits[ev[e].op / 64] |= uint64_t{1} << (ev[e].op % 64);
        std::optional<std::string> next = op.write ? op.value : state;
        if (cache.insert({bits, next}).second) {
          stack.push_back({e, state});
          state = next;
          linearized = std::move(bits);
          unlink(e);
          unlink(ev[e].match);
          e = ev[head].next;
          continue;
        }
      }
      e = ev[e].next;
    } else {
      if (stack.empty()) return false;
      auto [call, before] = stack.back();
      stack.pop_back();
      state = before;
      linearized[ev[call].op / 64] &= ~(uint64_t{1} << (ev[call].op % 64));
      relink(ev[call].match);
      relink(call);
      e = ev[call].next;
    }
  }
  return true;
}

TEST(LinearizabilityCheckerTest, FindsAStaleRead) {
  const auto t0 = Clock::now();
  auto at = [&](int ms) { return t0 + std::chrono::milliseconds(ms); };
  // w(1) completes, then a read that starts later still sees absent.
  EXPECT_FALSE(Linearizable({{true, "1", at(0), at(10)}, {false, std::nullopt, at(20), at(30)}}));
  // Concurrent: either order.
  EXPECT_TRUE(Linearizable({{true, "1", at(0), at(30)}, {false, std::nullopt, at(10), at(20)}}));
  // An unknown write may take effect late...
  EXPECT_TRUE(Linearizable({{true, "1", at(0), Clock::time_point::max()},
                            {false, std::nullopt, at(10), at(20)},
                            {false, "1", at(30), at(40)}}));
  // ...but reads cannot flip back and forth between two values.
  EXPECT_FALSE(Linearizable({{true, "1", at(0), at(5)},
                             {true, "2", at(6), at(10)},
                             {false, "2", at(20), at(30)},
                             {false, "1", at(40), at(50)}}));
}

// Concurrent clients set and get a few keys through two leader failovers;
// each key's history must be linearizable.
TEST(ClusterTest, HistoriesAreLinearizable) {
  Cluster c;
  c.StartAll();
  ASSERT_GE(c.WaitForLeader(), 0);
  constexpr int kKeys = 3, kClients = 6;
  std::mutex mu;
  std::vector<std::vector<RegOp>> history(kKeys);
  std::atomic<bool> stop{false};
  std::atomic<int> unknown{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      auto client = ClusterClient(c);
      std::mt19937 rng(t);
      std::string r;
      for (int n = 0; !stop; ++n) {
        const int key = static_cast<int>(rng() % kKeys);
        const bool write = rng() % 2 == 0;
        const std::string value = std::to_string(t) + "-" + std::to_string(n);
        json req = write ? json{{"op", "set"}, {"key", "lin" + std::to_string(key)}, {"value", value}}
                         : json{{"op", "get"}, {"key", "lin" + std::to_string(key)}};
        RegOp op{write, std::nullopt, Clock::now(), {}};
        kvstore::Status s = client.Call(req.dump(), &r);
        op.response = Clock::now();
        json j = s.ok() ? json::parse(r, nullptr, false) : json();
        const bool ok = s.ok() && j.is_object() && j.value("ok", false);
        const std::string code = s.ok() && j.is_object() && j.contains("error") ? j["error"].value("code", "") : "";
        if (write) {
          op.value = value;
          if (!ok) {
            // Refused before reaching the log: it never happened.
            const bool definite = s.ok() && (code == "not_leader" || code == "bad_request" ||
                                             (code == "unavailable" && !j["error"].contains("outcome")));
            if (definite) continue;
            op.response = Clock::time_point::max();
            unknown++;
          }
        } else {
          if (!ok && code != "not_found") {
            if (!s.ok()) client.Close();
            continue;  // a read that failed says nothing
          }
          if (ok) op.value = j["result"].get<std::string>();
        }
        if (!s.ok()) client.Close();
        std::lock_guard lock(mu);
        history[key].push_back(std::move(op));
      }
    });
  }
  for (int failover = 0; failover < 2; ++failover) {
    std::this_thread::sleep_for(700ms);
    int leader = c.WaitForLeader();
    ASSERT_GE(leader, 0);
    c.Kill(leader, SIGKILL);
    std::this_thread::sleep_for(700ms);
    c.Start(leader);
  }
  std::this_thread::sleep_for(700ms);
  stop = true;
  for (auto& t : clients) t.join();
  size_t total = 0;
  for (int k = 0; k < kKeys; ++k) {
    total += history[k].size();
    EXPECT_TRUE(Linearizable(history[k])) << "key lin" << k << ": " << history[k].size() << " operations";
  }
  std::printf("linearizability: %zu operations on %d keys (%d with unknown outcome), no violation found\n", total,
              kKeys, unknown.load());
  EXPECT_GT(total, 200u);
}

}  // namespace
