// Protocol tests over real sockets against a kvserver process that each test
// starts on a free port on 127.0.0.1 and stops itself.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/client.h"

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// A kvserver child process. The destructor kills (SIGKILL) and reaps it if
// the test did not stop it, so no test leaves a server behind.
class ServerProcess {
 public:
  ServerProcess(const std::string& data_dir, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {KVSERVER_PATH, "--host", "127.0.0.1", "--port", "0",
                                     "--data-dir", data_dir, "--log-level", "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    // The first stdout line is "listening 127.0.0.1:PORT".
    std::string line;
    char c;
    pollfd p{out[0], POLLIN, 0};
    while (line.find('\n') == std::string::npos && poll(&p, 1, 10000) == 1 && read(out[0], &c, 1) == 1) {
      line += c;
    }
    // With --metrics-port, a second line says "metrics 127.0.0.1:PORT".
    std::string metrics_line;
    if (std::find(extra.begin(), extra.end(), "--metrics-port") != extra.end()) {
      while (metrics_line.find('\n') == std::string::npos && poll(&p, 1, 10000) == 1 &&
             read(out[0], &c, 1) == 1) {
        metrics_line += c;
      }
      auto colon = metrics_line.rfind(':');
      if (metrics_line.rfind("metrics 127.0.0.1:", 0) == 0 && colon != std::string::npos) {
        metrics_port_ = static_cast<uint16_t>(std::stoi(metrics_line.substr(colon + 1)));
      }
    }
    close(out[0]);
    auto colon = line.rfind(':');
    if (line.rfind("listening 127.0.0.1:", 0) == 0 && colon != std::string::npos) {
      port_ = static_cast<uint16_t>(std::stoi(line.substr(colon + 1)));
    }
    EXPECT_NE(port_, 0) << "kvserver said: " << line;
  }

  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  uint16_t metrics_port() const { return metrics_port_; }

  // Sends sig and waits (up to timeout) for the exit; returns the exit
  // status as waitpid reports it, or -1 on timeout (then it is killed).
  int Stop(int sig, std::chrono::milliseconds timeout = 15s) {
    kill(pid_, sig);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return status;
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  uint16_t metrics_port_ = 0;
};

// A blocking client connection with line reads.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Client() { Close(); }
  Client(const Client&) = delete;

  bool connected() const { return connected_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // The next line, or "<eof>" / "<timeout>".
  std::string ReadLine(std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "<timeout>";
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) != 1) return "<timeout>";
      char tmp[65536];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) return "<eof>";
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

  json Call(const json& req) {
    if (!Send(req.dump() + "\n")) return json{{"send", "failed"}};
    std::string line = ReadLine();
    json r = json::parse(line, nullptr, false);
    if (r.is_discarded()) return json{{"raw", line}};
    return r;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

std::string Code(const json& r) {
  if (r.value("ok", false)) return "";
  if (!r.contains("error")) return "<no response: " + r.dump() + ">";
  return r["error"]["code"].get<std::string>();
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("server_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string data() const { return (dir_ / "data").string(); }
  std::filesystem::path dir_;
};

TEST_F(ServerTest, OpsAndErrorsOverOneConnection) {
  ServerProcess server(data());
  Client c(server.port());
  ASSERT_TRUE(c.connected());
  EXPECT_EQ(c.Call({{"op", "ping"}, {"id", 1}}), json::parse(R"({"id":1,"ok":true,"result":"pong"})"));
  EXPECT_EQ(Code(c.Call({{"op", "set"}, {"key", "name"}, {"value", {{"first", "Alice"}}}})), "");
  EXPECT_EQ(c.Call({{"op", "get"}, {"key", "name"}})["result"], (json{{"first", "Alice"}}));
  EXPECT_EQ(Code(c.Call({{"op", "get"}, {"key", "nope"}})), "not_found");
  EXPECT_EQ(Code(c.Call({{"op", "bulk_set"}, {"items", json::parse(R"([["a",1],["b",2]])")}})), "");
  EXPECT_EQ(c.Call({{"op", "bulk_get"}, {"keys", {"a", "b", "c"}}})["result"], (json{{"a", 1}, {"b", 2}}));
  EXPECT_EQ(c.Call({{"op", "scan"}, {"start", "a"}, {"end", "c"}})["result"]["items"].size(), 2u);
  EXPECT_EQ(Code(c.Call({{"op", "cas"}, {"key", "a"}, {"expected", 1}, {"value", 10}})), "");
  EXPECT_EQ(Code(c.Call({{"op", "cas"}, {"key", "a"}, {"expected", 1}, {"value", 11}})), "conflict");
  json txn = json::parse(R"({"op":"txn","compare":[{"key":"a","value":10}],"success":[{"op":"delete","key":"b"}]})");
  EXPECT_EQ(c.Call(txn)["result"]["succeeded"], true);
  EXPECT_EQ(Code(c.Call({{"op", "delete"}, {"key", "name"}})), "");
  json stats = c.Call({{"op", "stats"}})["result"];
  EXPECT_EQ(stats["keys"], 1);  // only "a" is left
  EXPECT_EQ(stats["connections"], 1);
  EXPECT_GT(stats["wal_size"].get<uint64_t>(), 0u);
  // Bad input: an error each, and the connection stays usable.
  for (std::string bad : std::vector<std::string>{"{oops", "[]", "{\"op\":\"nope\"}", "{\"op\":\"get\",\"key\":7}",
                          "{\"op\":\"get\"}", "{\"op\":\"ping\",\"x\":\"\xff\"}",
                          "{\"op\":\"set\",\"key\":\"d\",\"value\":" + std::string(5000, '[') + "}"}) {
    ASSERT_TRUE(c.Send(bad + "\n"));
    json r = json::parse(c.ReadLine(), nullptr, false);
    EXPECT_TRUE(Code(r) == "bad_request" || Code(r) == "unknown_op") << bad.substr(0, 40) << " -> " << r;
  }
  EXPECT_EQ(Code(c.Call({{"op", "flush"}})), "");
  // The searches: hits, and every wrong argument a bad_request.
  EXPECT_EQ(Code(c.Call({{"op", "set"}, {"key", "s1"}, {"value", "green tea leaves"}})), "");
  EXPECT_EQ(Code(c.Call({{"op", "set"}, {"key", "s2"}, {"value", {{"t", "green apples"}}}})), "");
  EXPECT_EQ(c.Call({{"op", "search_by_value"}, {"value", {{"t", "green apples"}}}})["result"], json({"s2"}));
  json ft = c.Call({{"op", "fulltext_search"}, {"query", "GREEN"}, {"with_values", true}})["result"];
  ASSERT_EQ(ft.size(), 2u) << ft;
  EXPECT_TRUE(ft[0]["score"].is_number());
  EXPECT_TRUE(ft[0].contains("value"));
  EXPECT_EQ(c.Call({{"op", "fulltext_search"}, {"query", "green tea"}})["result"].size(), 1u);
  EXPECT_EQ(c.Call({{"op", "fulltext_search"}, {"query", "green tea"}, {"mode", "any"}})["result"].size(), 2u);
  json sem = c.Call({{"op", "semantic_search"}, {"query", "green tea"}, {"k", 1}, {"threshold", 0.1}})["result"];
  ASSERT_EQ(sem.size(), 1u) << sem;
  EXPECT_EQ(sem[0]["key"], "s1");
  for (const json& bad : {json{{"op", "fulltext_search"}},
                          json{{"op", "fulltext_search"}, {"query", 3}},
                          json{{"op", "fulltext_search"}, {"query", "x"}, {"mode", "some"}},
                          json{{"op", "fulltext_search"}, {"query", "x"}, {"limit", 0}},
                          json{{"op", "semantic_search"}},
                          json{{"op", "semantic_search"}, {"query", "x"}, {"vector", {1, 2}}},
                          json{{"op", "semantic_search"}, {"vector", {1, 2}}},  // wrong dimension
                          json{{"op", "semantic_search"}, {"vector", {"a"}}},
                          json{{"op", "semantic_search"}, {"query", "x"}, {"threshold", "high"}},
                          json{{"op", "search_by_value"}}}) {
    EXPECT_EQ(Code(c.Call(bad)), "bad_request") << bad;
  }
  EXPECT_EQ(Code(c.Call({{"op", "ping"}})), "");
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

TEST_F(ServerTest, SearchFlagsTurnIndexesOffAndIndexesSurviveARestart) {
  {
    ServerProcess server(data(), {"--no-search"});
    Client c(server.port());
    EXPECT_EQ(Code(c.Call({{"op", "set"}, {"key", "a"}, {"value", "red apple"}})), "");
    EXPECT_EQ(Code(c.Call({{"op", "fulltext_search"}, {"query", "apple"}})), "unavailable");
    EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
  }
  {
    // Turned on later: the tables written meanwhile get their segments at
    // start, and the memtable's WAL is indexed on replay.
    ServerProcess server(data(), {"--no-semantic"});
    Client c(server.port());
    EXPECT_EQ(c.Call({{"op", "fulltext_search"}, {"query", "apples"}})["result"].size(), 1u);
    EXPECT_EQ(Code(c.Call({{"op", "semantic_search"}, {"query", "apple"}})), "unavailable");
    EXPECT_EQ(Code(c.Call({{"op", "flush"}})), "");
    EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
  }
  {
    ServerProcess server(data());
    Client c(server.port());
    EXPECT_EQ(c.Call({{"op", "fulltext_search"}, {"query", "apple"}})["result"].size(), 1u);
    json sem = c.Call({{"op", "semantic_search"}, {"query", "red apples"}, {"threshold", 0.1}})["result"];
    ASSERT_EQ(sem.size(), 1u) << sem;
    EXPECT_EQ(sem[0]["key"], "a");
    EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
  }
}

TEST_F(ServerTest, PipelinedThousandRequestsAnswerInOrder) {
  ServerProcess server(data());
  Client c(server.port());
  std::string batch;
  for (int i = 0; i < 1000; ++i) {
    json req = i % 2 == 0 ? json{{"id", i}, {"op", "set"}, {"key", "p" + std::to_string(i / 2)}, {"value", i}}
                          : json{{"id", i}, {"op", "get"}, {"key", "p" + std::to_string(i / 2)}};
    batch += req.dump() + "\n";
  }
  ASSERT_TRUE(c.Send(batch));
  for (int i = 0; i < 1000; ++i) {
    json r = json::parse(c.ReadLine(), nullptr, false);
    ASSERT_FALSE(r.is_discarded());
    ASSERT_EQ(r["id"], i);
    ASSERT_EQ(Code(r), "") << r;
    if (i % 2 == 1) {
      EXPECT_EQ(r["result"], i - 1);  // the get sees the set before it
    }
  }
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

// More answered responses than one send takes (a megabyte at a time) from
// one read of pipelined gets: every one arrives, in order, however much
// of it each send gets into the socket.
TEST_F(ServerTest, PipelinedResponsesPastAMegabyteAllArrive) {
  ServerProcess server(data());
  Client c(server.port());
  const std::string value(64 * 1024, 'v');
  ASSERT_EQ(Code(c.Call({{"op", "set"}, {"key", "big"}, {"value", value}})), "");
  std::string batch;
  constexpr int kGets = 80;  // about 5 MiB of responses
  for (int i = 0; i < kGets; ++i) batch += json{{"id", i}, {"op", "get"}, {"key", "big"}}.dump() + "\n";
  ASSERT_TRUE(c.Send(batch));
  for (int i = 0; i < kGets; ++i) {
    json r = json::parse(c.ReadLine(), nullptr, false);
    ASSERT_FALSE(r.is_discarded()) << i;
    ASSERT_EQ(r["id"], i);
    ASSERT_EQ(r["result"], value) << i;
  }
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

TEST_F(ServerTest, TwoHundredConcurrentConnections) {
  ServerProcess server(data());
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 200; ++i) {
    clients.push_back(std::make_unique<Client>(server.port()));
    ASSERT_TRUE(clients.back()->connected()) << i;
  }
  // Every connection has a write in flight at once: they share fsyncs.
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(clients[i]->Send(json{{"op", "set"}, {"key", "c" + std::to_string(i)}, {"value", i}}.dump() + "\n"));
  }
  for (int i = 0; i < 200; ++i) EXPECT_EQ(Code(json::parse(clients[i]->ReadLine())), "") << i;
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(clients[i]->Call({{"op", "get"}, {"key", "c" + std::to_string((i + 1) % 200)}})["result"], (i + 1) % 200);
  }
  json stats = clients[0]->Call({{"op", "stats"}})["result"];
  EXPECT_EQ(stats["connections"], 200);
  EXPECT_LT(stats["wal_syncs"].get<uint64_t>(), 200u);  // group commit at work
  clients.clear();
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

TEST_F(ServerTest, StalledAndVanishingClientsDoNotHoldUpOthers) {
  ServerProcess server(data());
  Client stalled(server.port());
  ASSERT_TRUE(stalled.Send(R"({"op":"set","key":"half","val)"));  // and nothing more
  {
    // Disconnects mid-request, and with writes in flight it never reads.
    Client gone(server.port());
    std::string burst;
    for (int i = 0; i < 100; ++i) burst += json{{"op", "set"}, {"key", "g" + std::to_string(i)}, {"value", i}}.dump() + "\n";
    ASSERT_TRUE(gone.Send(burst + R"({"op":"get","ke)"));
  }
  Client other(server.port());
  for (int i = 0; i < 100; ++i) ASSERT_EQ(Code(other.Call({{"op", "set"}, {"key", "o"}, {"value", i}})), "") << i;
  EXPECT_EQ(other.Call({{"op", "get"}, {"key", "o"}})["result"], 99);
  // The stalled client still gets its answer once the line is complete.
  ASSERT_TRUE(stalled.Send(R"(ue":1})" "\n"));
  EXPECT_EQ(Code(json::parse(stalled.ReadLine())), "");
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

TEST_F(ServerTest, OverlongLineGetsTooLargeThenClose) {
  ServerProcess server(data(), {"--max-line-bytes", "1024"});
  Client c(server.port());
  EXPECT_EQ(Code(c.Call({{"op", "set"}, {"key", "k"}, {"value", std::string(900, 'v')}})), "");
  ASSERT_TRUE(c.Send(std::string(2000, 'x')));
  json r = json::parse(c.ReadLine(), nullptr, false);
  EXPECT_EQ(Code(r), "too_large") << r;
  EXPECT_EQ(c.ReadLine(), "<eof>");
  Client next(server.port());
  EXPECT_EQ(Code(next.Call({{"op", "ping"}})), "");
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

TEST_F(ServerTest, PastMaxConnectionsOneErrorLineThenClose) {
  ServerProcess server(data(), {"--max-connections", "2"});
  Client a(server.port()), b(server.port());
  EXPECT_EQ(Code(a.Call({{"op", "ping"}})), "");
  EXPECT_EQ(Code(b.Call({{"op", "ping"}})), "");
  Client c(server.port());
  json r = json::parse(c.ReadLine(), nullptr, false);
  EXPECT_EQ(Code(r), "unavailable") << r;
  EXPECT_EQ(c.ReadLine(), "<eof>");
  a.Close();
  // The slot frees once the server has seen a close; retry briefly.
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    Client d(server.port());
    served = Code(d.Call({{"op", "ping"}})) == "";
    if (!served) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(served);
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

TEST_F(ServerTest, IdleConnectionsTimeOutBusyOnesDoNot) {
  ServerProcess server(data(), {"--idle-timeout-ms", "300"});
  Client idle(server.port()), busy(server.port());
  ASSERT_TRUE(idle.Send(R"({"op":"pi)"));  // half a line counts as idle too
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(Code(busy.Call({{"op", "ping"}})), "") << i;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(idle.ReadLine(3s), "<eof>");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

TEST_F(ServerTest, AuthTokenRequiredWhenConfigured) {
  auto token_file = dir_ / "token";
  std::filesystem::create_directories(dir_);
  FILE* f = fopen(token_file.c_str(), "w");
  fputs("let-me-in\n", f);
  fclose(f);
  ServerProcess server(data(), {"--auth-token-file", token_file.string()});
  Client c(server.port());
  EXPECT_EQ(Code(c.Call({{"op", "get"}, {"key", "a"}})), "unauthorized");
  EXPECT_EQ(Code(c.Call({{"op", "auth"}, {"token", "nope"}})), "unauthorized");
  EXPECT_EQ(Code(c.Call({{"op", "auth"}, {"token", "let-me-in"}})), "");
  EXPECT_EQ(Code(c.Call({{"op", "set"}, {"key", "a"}, {"value", 1}})), "");
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

TEST_F(ServerTest, SigtermFinishesInFlightExitsZeroAndDataSurvives) {
  std::map<std::string, int> acked;
  {
    ServerProcess server(data());
    Client c(server.port());
    for (int i = 0; i < 50; ++i) {
      ASSERT_EQ(Code(c.Call({{"op", "set"}, {"key", "s" + std::to_string(i)}, {"value", i}})), "");
      acked["s" + std::to_string(i)] = i;
    }
    // A pipeline still in flight when SIGTERM arrives: whatever the server
    // read is answered before it exits.
    std::string burst;
    for (int i = 50; i < 300; ++i) burst += json{{"id", i}, {"op", "set"}, {"key", "s" + std::to_string(i)}, {"value", i}}.dump() + "\n";
    ASSERT_TRUE(c.Send(burst));
    std::this_thread::sleep_for(20ms);
    std::thread stopper([&] { EXPECT_EQ(server.Stop(SIGTERM), 0); });  // exit status 0
    for (int i = 50; i < 300; ++i) {
      json r = json::parse(c.ReadLine(), nullptr, false);
      if (r.is_discarded()) break;
      ASSERT_EQ(r["id"], i);
      ASSERT_EQ(Code(r), "");
      acked["s" + std::to_string(i)] = i;
    }
    stopper.join();
    // The burst was in the server's socket buffer well before SIGTERM, so
    // all of it was read, and so all of it must have been answered.
    EXPECT_EQ(acked.size(), 300u);
  }
  ServerProcess again(data());
  Client c(again.port());
  for (auto& [k, v] : acked) ASSERT_EQ(c.Call({{"op", "get"}, {"key", k}})["result"], v) << k;
  EXPECT_EQ(WEXITSTATUS(again.Stop(SIGTERM)), 0);
}

// A plain HTTP/1.0 GET; returns the whole response (status line included).
std::string HttpGet(uint16_t port, const std::string& path) {
  Client c(port);
  if (!c.Send("GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")) return "<send failed>";
  std::string all, line;
  while ((line = c.ReadLine(5s)) != "<eof>" && line != "<timeout>") all += line + "\n";
  return all;
}

TEST_F(ServerTest, MetricsAndHealthOnTheHttpPort) {
  ServerProcess server(data(), {"--metrics-port", "0"});
  ASSERT_NE(server.metrics_port(), 0);
  Client c(server.port());
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Code(c.Call({{"op", "set"}, {"key", "m" + std::to_string(i)}, {"value", i}})), "");
  EXPECT_EQ(Code(c.Call({{"op", "get"}, {"key", "missing"}})), "not_found");
  std::string health = HttpGet(server.metrics_port(), "/health");
  EXPECT_NE(health.find("200"), std::string::npos) << health;
  EXPECT_NE(health.find("ok"), std::string::npos) << health;
  std::string m = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_NE(m.find("kvstore_requests_total{op=\"set\"} 3"), std::string::npos) << m;
  EXPECT_NE(m.find("kvstore_request_errors_total{op=\"get\"} 1"), std::string::npos);
  EXPECT_NE(m.find("kvstore_request_duration_seconds_count{op=\"set\"} 3"), std::string::npos);
  EXPECT_NE(m.find("kvstore_request_duration_seconds_bucket{op=\"set\",le=\"+Inf\"} 3"), std::string::npos);
  EXPECT_NE(m.find("kvstore_keys 3"), std::string::npos);
  EXPECT_NE(m.find("kvstore_connections 1"), std::string::npos);
  EXPECT_NE(m.find("kvstore_wal_syncs_total"), std::string::npos);
  EXPECT_NE(m.find("kvstore_write_stalls_total"), std::string::npos);
  EXPECT_NE(m.find("kvstore_level_files{level=\"0\"}"), std::string::npos);
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

// Resident memory of a process, in KiB, from /proc.
long RssKiB(pid_t pid) {
  FILE* f = fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "r");
  if (f == nullptr) return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
  }
  fclose(f);
  return kib;
}

// Pipelined gets of a large value from a client that does not read: the
// server must stop reading that client instead of buffering every response.
TEST_F(ServerTest, UnreadResponsesDoNotGrowMemoryWithoutBound) {
  ServerProcess server(data());
  Client c(server.port());
  ASSERT_EQ(Code(c.Call({{"op", "set"}, {"key", "big"}, {"value", std::string(1 << 20, 'b')}})), "");
  std::string gets;
  for (int i = 0; i < 400; ++i) gets += R"({"op":"get","key":"big"})" "\n";  // 400 MiB of answers
  ASSERT_TRUE(c.Send(gets));
  std::this_thread::sleep_for(500ms);
  long rss = RssKiB(server.pid());
  EXPECT_GT(rss, 0);
  EXPECT_LT(rss, 200 * 1024) << "server buffered the unread responses";
  for (int i = 0; i < 400; ++i) {
    std::string line = c.ReadLine();
    ASSERT_EQ(line.size(), (1u << 20) + 2 + std::strlen(R"({"ok":true,"result":})")) << i;
  }
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
}

// A client that pipelines big responses and never reads them must not hold
// the shutdown forever: after the drain timeout it is cut off.
TEST_F(ServerTest, SigtermAbortsAClientThatStoppedReading) {
  ServerProcess server(data(), {"--drain-timeout-ms", "300"});
  Client c(server.port());
  ASSERT_EQ(Code(c.Call({{"op", "set"}, {"key", "big"}, {"value", std::string(1 << 20, 'b')}})), "");
  std::string gets;
  for (int i = 0; i < 64; ++i) gets += R"({"op":"get","key":"big"})" "\n";
  ASSERT_TRUE(c.Send(gets));  // 64 MiB of responses; we read none of them
  std::this_thread::sleep_for(200ms);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(server.Stop(SIGTERM, 10s), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST_F(ServerTest, KillNineKeepsEveryAcknowledgedWrite) {
  std::mutex mu;
  std::map<std::string, int> acked;
  {
    ServerProcess server(data());
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int t = 0; t < 4; ++t) {
      writers.emplace_back([&, t] {
        Client c(server.port());
        // Pipelined 8 deep, so writes are always in flight when the kill lands.
        int sent = 0, next_ack = 0;
        while (!stop) {
          while (sent - next_ack < 8) {
            if (!c.Send(json{{"id", sent}, {"op", "set"}, {"key", "w" + std::to_string(t) + "_" + std::to_string(sent)}, {"value", sent}}.dump() + "\n")) return;
            ++sent;
          }
          json r = json::parse(c.ReadLine(2s), nullptr, false);
          if (r.is_discarded() || Code(r) != "") return;
          std::lock_guard lock(mu);
          acked["w" + std::to_string(t) + "_" + std::to_string(r["id"].get<int>())] = r["id"].get<int>();
          ++next_ack;
        }
      });
    }
    std::this_thread::sleep_for(700ms);
    EXPECT_NE(server.Stop(SIGKILL), -1);
    stop = true;
    for (auto& w : writers) w.join();
  }
  ASSERT_GT(acked.size(), 50u);
  ServerProcess again(data());
  Client c(again.port());
  std::vector<std::string> keys;
  for (auto& [k, v] : acked) keys.push_back(k);
  json got = c.Call({{"op", "bulk_get"}, {"keys", keys}})["result"];
  for (auto& [k, v] : acked) ASSERT_EQ(got[k], v) << k << " was acknowledged but is lost";
  EXPECT_EQ(WEXITSTATUS(again.Stop(SIGTERM)), 0);
}

// Runs a shell command line; returns its stdout (stderr appended) and exit code.
std::pair<std::string, int> Shell(const std::string& command) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return {"popen failed", -1};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

TEST_F(ServerTest, KvctlCommandsAndInteractiveMode) {
  ServerProcess server(data());
  const std::string kvctl = std::string(KVCTL_PATH) + " --port " + std::to_string(server.port()) + " ";
  EXPECT_EQ(Shell(kvctl + "ping"), (std::pair<std::string, int>{"pong\n", 0}));
  EXPECT_EQ(Shell(kvctl + "set n -5").second, 0);  // a negative number, not a flag
  EXPECT_EQ(Shell(kvctl + "get n").first, "-5\n");
  EXPECT_EQ(Shell(kvctl + "set name Alice Smith").second, 0);  // not JSON: a string
  EXPECT_EQ(Shell(kvctl + "get name").first, "\"Alice Smith\"\n");
  EXPECT_EQ(Shell(kvctl + "set obj '{\"b\":1,\"a\":[true]}'").second, 0);
  EXPECT_EQ(Shell(kvctl + "get obj").first, "{\"a\":[true],\"b\":1}\n");
  EXPECT_EQ(Shell(kvctl + "scan --limit 2").first, "n\t-5\nname\t\"Alice Smith\"\n(more)\n");
  EXPECT_EQ(Shell(kvctl + "cas n -5 6").second, 0);
  auto [out, code] = Shell(kvctl + "cas n -5 7");
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("conflict"), std::string::npos) << out;
  EXPECT_EQ(Shell(kvctl + "del n name"), (std::pair<std::string, int>{"OK\n", 0}));
  EXPECT_EQ(Shell(kvctl + "get n").first, "(nil)\n");
  EXPECT_EQ(Shell(kvctl + "bogus").second, 2);
  EXPECT_EQ(Shell("printf 'set x \"hello world\"\\nget x\\nmget x obj zz\\n' | " + kvctl).first,
            "OK\n\"hello world\"\n{\"obj\":{\"a\":[true],\"b\":1},\"x\":\"hello world\"}\n");
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
  // With the server gone, a clear error and a failing exit code.
  auto [gone, gone_code] = Shell(kvctl + "--timeout-ms 2000 ping");
  EXPECT_EQ(gone_code, 1);
  EXPECT_NE(gone.find("IOError"), std::string::npos) << gone;
}

TEST_F(ServerTest, ClientPipelinesAndFollowsNotLeader) {
  ServerProcess server(data());
  // A stand-in follower: answers every request with not_leader, naming the
  // real server.
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(lfd, 4), 0);
  socklen_t len = sizeof addr;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  const uint16_t follower_port = ntohs(addr.sin_port);
  std::thread follower([&] {
    int fd = accept(lfd, nullptr, nullptr);
    if (fd < 0) return;
    char buf[4096];
    if (recv(fd, buf, sizeof buf, 0) > 0) {
      std::string reply = R"({"ok":false,"error":{"code":"not_leader","message":"follower","leader":"127.0.0.1:)" +
                          std::to_string(server.port()) + "\"}}\n";
      send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
    }
    close(fd);
  });
  kvstore::net::ClientOptions options;
  options.addresses = {"127.0.0.1:" + std::to_string(follower_port)};
  options.timeout_ms = 5000;
  kvstore::net::Client client(options);
  std::string response;
  ASSERT_TRUE(client.Call(R"({"op":"set","key":"r","value":1})", &response).ok());
  EXPECT_EQ(response, R"({"ok":true,"result":null})");
  EXPECT_EQ(client.connected_to(), "127.0.0.1:" + std::to_string(server.port()));
  follower.join();
  close(lfd);

  std::vector<std::string> requests, responses;
  for (int i = 0; i < 5000; ++i) {
    requests.push_back(json{{"id", i}, {"op", "set"}, {"key", "p" + std::to_string(i)}, {"value", i}}.dump());
  }
  ASSERT_TRUE(client.CallMany(requests, &responses).ok());
  ASSERT_EQ(responses.size(), requests.size());
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(json::parse(responses[i])["id"], i);
  ASSERT_TRUE(client.Call(R"({"op":"get","key":"p4999"})", &response).ok());
  EXPECT_EQ(response, R"({"ok":true,"result":4999})");
  EXPECT_EQ(WEXITSTATUS(server.Stop(SIGTERM)), 0);
  EXPECT_FALSE(client.Call(R"({"op":"ping"})", &response).ok());
}

}  // namespace
