#include "tests/support/procs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <set>
#include <filesystem>
#include <string>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "net/client.h"

namespace kvbench {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

bool Bindable(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

// The kernel's ephemeral range, which outgoing connections draw their local
// ports from.
std::pair<int, int> EphemeralRange() {
  int low = 32768, high = 60999;
  if (FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
    if (std::fscanf(f, "%d %d", &low, &high) != 2) low = 32768, high = 60999;
    std::fclose(f);
  }
  return {low, high};
}

}  // namespace

double ProcessCpuSeconds(pid_t pid) {
  if (pid <= 0) return -1;
  // Per thread, in nanoseconds (/proc/<pid>/stat counts clock ticks, too
  // coarse for a measurement of a second). Threads that have exited no
  // longer count; a server's threads live as long as it does.
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  uint64_t nanos = 0;
  bool any = false;
  for (const auto& entry : fs::directory_iterator(tasks, ec)) {
    FILE* f = std::fopen((entry.path().string() + "/schedstat").c_str(), "r");
    if (f == nullptr) continue;  // the thread just exited
    unsigned long long on_cpu = 0;
    if (std::fscanf(f, "%llu", &on_cpu) == 1) {
      nanos += on_cpu;
      any = true;
    }
    std::fclose(f);
  }
  return any && !ec ? static_cast<double>(nanos) / 1e9 : -1;
}

uint16_t FreePort() {
  // A port the kernel hands out for bind(0) comes from the ephemeral range,
  // where any outgoing connection (another test's client, a Raft peer) may
  // take it between now and the server's bind: "Address already in use".
  // So pick at random below that range, where only another picker like this
  // one can collide, and check that it binds now; the process remembers what
  // it handed out.
  static std::mutex mu;
  static std::set<uint16_t> given;
  static std::mt19937 rng(static_cast<uint32_t>(std::random_device{}() ^ static_cast<uint32_t>(getpid())));
  const auto [low, high] = EphemeralRange();
  (void)high;
  std::lock_guard lock(mu);
  if (low > 11000) {
    std::uniform_int_distribution<int> pick(10000, low - 1);
    for (int attempt = 0; attempt < 200; attempt++) {
      const auto port = static_cast<uint16_t>(pick(rng));
      if (given.count(port) == 0 && Bindable(port)) {
        given.insert(port);
        return port;
      }
    }
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

TempDir::TempDir(const std::string& prefix) {
  std::string tmpl = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!keep_ && !path_.empty()) fs::remove_all(path_, ec);
}

namespace {

// fork + exec argv with stdout on a pipe (returned in *out_fd; with
// out_fd null, stdout goes to log too) and stderr appended to log; -1 on
// failure. A child forked by the main thread dies with kvbench: the kernel's
// parent-death signal fires when the forking *thread* exits, so a child
// started by a worker thread (which may end first) does without it.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log, int* out_fd) {
  int out[2];
  if (pipe(out) != 0) return -1;
  const bool main_thread = ::syscall(SYS_gettid) == ::getpid();
  const pid_t parent = ::getpid();
  pid_t pid = fork();
  if (pid == 0) {
    if (main_thread) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) _exit(127);  // kvbench died before prctl
    }
    int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(out_fd != nullptr ? out[1] : err, 1);
    if (err >= 0) dup2(err, 2);
    close(out[0]);
    close(out[1]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  if (out_fd != nullptr) {
    *out_fd = out[0];
  } else {
    close(out[0]);
  }
  return pid;
}

// The first line the child prints, waiting at most timeout_ms.
std::string FirstLine(int fd, int timeout_ms) {
  std::string line;
  char c;
  pollfd p{fd, POLLIN, 0};
  while (poll(&p, 1, timeout_ms) == 1 && read(fd, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

bool Reap(pid_t pid, int sig) {
  ::kill(pid, sig);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

ServerProcess::ServerProcess(std::string binary, std::string data_dir, std::vector<std::string> extra_args)
    : binary_(std::move(binary)), data_dir_(std::move(data_dir)), extra_(std::move(extra_args)) {}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) Stop(SIGKILL);
}

bool ServerProcess::Start() {
  if (pid_ > 0) return true;
  std::vector<std::string> args = {binary_, "--host", "127.0.0.1", "--port", std::to_string(port_),
                                   "--data-dir", data_dir_, "--log-level", "warn"};
  args.insert(args.end(), extra_.begin(), extra_.end());
  // Right after a kill -9 the old port may still be held for a moment.
  for (int attempt = 0; attempt < 50; ++attempt) {
    int fd;
    pid_ = Spawn(args, log_path(), &fd);
    if (pid_ < 0) return false;
    // Recovery of a large store can take a while before it listens.
    std::string line = FirstLine(fd, 60000);
    close(fd);
    auto colon = line.rfind(':');
    if (line.rfind("listening ", 0) == 0 && colon != std::string::npos) {
      port_ = std::stoi(line.substr(colon + 1));
      return true;
    }
    Reap(pid_, SIGKILL);
    pid_ = -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

bool ServerProcess::Stop(int sig) {
  if (pid_ <= 0) return false;
  bool clean = Reap(pid_, sig);
  pid_ = -1;
  return clean;
}

ClusterProcess::ClusterProcess(const std::string& binary, const std::string& dir, std::vector<std::string> extra) {
  std::vector<std::string> rafts, transfers;
  for (int i = 0; i < 3; ++i) {
    clients_.push_back("127.0.0.1:" + std::to_string(FreePort()));
    rafts.push_back("127.0.0.1:" + std::to_string(FreePort()));
    transfers.push_back("127.0.0.1:" + std::to_string(FreePort()));
  }
  auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
    return out;
  };
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> args = {"--cluster", "--node-id", std::to_string(i + 1), "--peers", join(rafts),
                                     "--peer-clients", join(clients_), "--peer-transfers", join(transfers),
                                     "--threads", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    nodes_.push_back(std::make_unique<ServerProcess>(binary, dir + "/node_" + std::to_string(i + 1), std::move(args)));
    nodes_.back()->set_port(std::stoi(clients_[i].substr(clients_[i].rfind(':') + 1)));
  }
}

bool ClusterProcess::StartAll() {
  for (int i = 0; i < 3; ++i) {
    if (!Start(i)) return false;
  }
  return true;
}

int ClusterProcess::WaitForLeader(int timeout_ms) {
  auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < end) {
    int leader = -1;
    bool agreed = true;
    for (int i = 0; i < 3 && agreed; ++i) {
      if (!nodes_[i]->running()) continue;
      kvstore::net::Client c({.addresses = {clients_[i]}, .timeout_ms = 500, .token = {}, .max_redirects = 0});
      std::string response;
      if (!c.Call(R"({"op":"stats"})", &response).ok()) {
        agreed = false;
        break;
      }
      auto r = nlohmann::json::parse(response, nullptr, false);
      if (r.is_discarded() || !r.value("ok", false)) {
        agreed = false;
        break;
      }
      const auto& cl = r["result"]["cluster"];
      if (cl.value("role", "") == "leader") leader = i;
      int id = cl.value("leader_id", 0);
      if (id == 0 || (leader >= 0 && id != leader + 1)) agreed = false;
    }
    if (agreed && leader >= 0) return leader;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

namespace {

bool RedisPing(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && write(fd, "PING\r\n", 6) == 6) {
    char buf[16] = {};
    pollfd p{fd, POLLIN, 0};
    ok = poll(&p, 1, 1000) == 1 && read(fd, buf, sizeof buf - 1) > 0 && std::string(buf).rfind("+PONG", 0) == 0;
  }
  close(fd);
  return ok;
}

}  // namespace

RedisProcess::~RedisProcess() {
  if (pid_ > 0) Stop(SIGKILL);
}

bool RedisProcess::Start() {
  if (pid_ > 0) return true;
  if (port_ == 0) port_ = FreePort();
  fs::create_directories(dir_);
  // The same promise kvserver makes: acknowledged means fsync'd.
  std::vector<std::string> args = {"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                   "--dir", dir_, "--appendonly", "yes", "--appendfsync", "always",
                                   "--save", "", "--daemonize", "no", "--logfile", dir_ + "/redis.log", "--protected-mode", "yes"};
  int fd;
  pid_ = Spawn(args, dir_ + "/redis.log", &fd);
  if (pid_ < 0) return false;
  close(fd);
  for (auto end = Clock::now() + std::chrono::seconds(30); Clock::now() < end;) {
    if (RedisPing(port_)) return true;
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {  // exited: not installed, or port taken
      pid_ = -1;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Stop(SIGKILL);
  return false;
}

bool RedisProcess::Stop(int sig) {
  if (pid_ <= 0) return false;
  bool clean = Reap(pid_, sig);
  pid_ = -1;
  return clean;
}

// ---- etcd -----------------------------------------------------------------

EtcdCluster::EtcdCluster(std::string binary, std::string dir, int heartbeat_ms, int election_ms)
    : binary_(std::move(binary)), dir_(std::move(dir)), heartbeat_ms_(heartbeat_ms), election_ms_(election_ms) {
  for (int i = 0; i < 3; ++i) {
    clients_.push_back("127.0.0.1:" + std::to_string(FreePort()));
    peers_.push_back("127.0.0.1:" + std::to_string(FreePort()));
  }
  pids_.assign(3, -1);
}

EtcdCluster::~EtcdCluster() {
  for (int i = 0; i < 3; ++i) Kill(i);
}

bool EtcdCluster::Spawn(int i) {
  if (pids_[i] > 0) return true;
  std::string initial;
  for (int j = 0; j < 3; ++j) {
    initial += (j > 0 ? "," : "") + std::string("m") + std::to_string(j + 1) + "=http://" + peers_[j];
  }
  const std::string name = "m" + std::to_string(i + 1);
  // --initial-cluster-state new is ignored once the data directory exists,
  // so a restart after kill -9 rejoins with the same arguments.
  std::vector<std::string> args = {binary_, "--name", name, "--data-dir", dir_ + "/" + name,
                                   "--listen-client-urls", "http://" + clients_[i],
                                   "--advertise-client-urls", "http://" + clients_[i],
                                   "--listen-peer-urls", "http://" + peers_[i],
                                   "--initial-advertise-peer-urls", "http://" + peers_[i],
                                   "--initial-cluster", initial, "--initial-cluster-state", "new",
                                   "--initial-cluster-token", "kvbench",
                                   "--heartbeat-interval", std::to_string(heartbeat_ms_),
                                   "--election-timeout", std::to_string(election_ms_),
                                   "--logger", "zap", "--log-level", "warn"};
  pids_[i] = ::kvbench::Spawn(args, dir_ + "/" + name + ".log", nullptr);
  return pids_[i] > 0;
}

bool EtcdCluster::WaitHealthy(int i, int timeout_ms) {
  const std::string& a = clients_[i];
  httplib::Client c(a.substr(0, a.rfind(':')), std::stoi(a.substr(a.rfind(':') + 1)));
  c.set_connection_timeout(0, 500000);
  c.set_read_timeout(1, 0);
  for (auto end = Clock::now() + std::chrono::milliseconds(timeout_ms); Clock::now() < end;) {
    int status;
    if (pids_[i] <= 0 || waitpid(pids_[i], &status, WNOHANG) == pids_[i]) {  // exited
      pids_[i] = -1;
      return false;
    }
    auto r = c.Get("/health");
    if (r && r->status == 200 && r->body.find("\"health\":\"true\"") != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

bool EtcdCluster::StartAll() {
  fs::create_directories(dir_);
  // All three first: a member is healthy only once a quorum has elected.
  for (int i = 0; i < 3; ++i) {
    if (!Spawn(i)) return false;
  }
  for (int i = 0; i < 3; ++i) {
    if (!WaitHealthy(i, 30000)) return false;
  }
  return true;
}

bool EtcdCluster::Start(int i) { return Spawn(i) && WaitHealthy(i, 30000); }

void EtcdCluster::Kill(int i) {
  if (pids_[i] <= 0) return;
  Reap(pids_[i], SIGKILL);
  pids_[i] = -1;
}

int EtcdCluster::WaitForLeader(int timeout_ms) {
  auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < end) {
    int leader = -1;
    std::string leader_id;
    bool agreed = true;
    for (int i = 0; i < 3 && agreed; ++i) {
      if (pids_[i] <= 0) continue;
      EtcdClient c({clients_[i]}, 0, 1000);
      std::string body;
      nlohmann::json r;
      if (!c.Post("/v3/maintenance/status", "{}", &body) ||
          (r = nlohmann::json::parse(body, nullptr, false)).is_discarded() || !r.contains("leader")) {
        agreed = false;
        break;
      }
      // The gateway writes uint64 fields as JSON strings.
      const std::string member = r["header"].value("member_id", "");
      const std::string names = r.value("leader", "");
      if (names.empty() || names == "0" || (!leader_id.empty() && names != leader_id)) agreed = false;
      leader_id = names;
      if (member == names) leader = i;
    }
    if (agreed && leader >= 0) return leader;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

struct EtcdClient::Conn {
  explicit Conn(const std::string& address, int timeout_ms)
      : http(address.substr(0, address.rfind(':')), std::stoi(address.substr(address.rfind(':') + 1))) {
    http.set_keep_alive(true);
    // Else Nagle holds back the body behind the headers until the peer's
    // delayed ACK: 40 ms a request.
    http.set_tcp_nodelay(true);
    http.set_connection_timeout(timeout_ms / 1000, (timeout_ms % 1000) * 1000);
    http.set_read_timeout(timeout_ms / 1000, (timeout_ms % 1000) * 1000);
    http.set_write_timeout(timeout_ms / 1000, (timeout_ms % 1000) * 1000);
  }
  httplib::Client http;
};

EtcdClient::EtcdClient(std::vector<std::string> addresses, size_t first, int timeout_ms)
    : addresses_(std::move(addresses)), current_(first % addresses_.size()), timeout_ms_(timeout_ms) {}

EtcdClient::~EtcdClient() = default;

bool EtcdClient::Post(const std::string& path, const std::string& body, std::string* response) {
  if (!conn_) conn_ = std::make_unique<Conn>(addresses_[current_], timeout_ms_);
  auto r = conn_->http.Post(path, body, "application/json");
  if (r && r->status == 200) {
    *response = std::move(r->body);
    return true;
  }
  // Refused, cut, timed out, or an error such as "no leader": the next
  // member may do better (a follower forwards puts to the leader).
  conn_.reset();
  current_ = (current_ + 1) % addresses_.size();
  return false;
}

bool EtcdClient::Put(const std::string& key, const std::string& value) {
  std::string response;
  const std::string body = "{\"key\":\"" + Base64(key) + "\",\"value\":\"" + Base64(value) + "\"}";
  return Post("/v3/kv/put", body, &response) && response.find("\"header\"") != std::string::npos;
}

std::string Base64(const std::string& in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8) |
                       static_cast<uint8_t>(in[i + 2]);
    for (int k = 3; k >= 0; --k) out += kAlphabet[(v >> (6 * k)) & 63];
  }
  if (i < in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint8_t>(in[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace kvbench
