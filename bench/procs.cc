#include "bench/procs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "net/client.h"

namespace kvbench {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

uint16_t FreePort() {
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

// fork + exec argv with stdout on a pipe (returned in *out_fd) and stderr
// appended to log; -1 on failure.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log, int* out_fd) {
  int out[2];
  if (pipe(out) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
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
  *out_fd = out[0];
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

ClusterProcess::ClusterProcess(const std::string& binary, const std::string& dir) {
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
    nodes_.push_back(std::make_unique<ServerProcess>(
        binary, dir + "/node_" + std::to_string(i + 1),
        std::vector<std::string>{"--cluster", "--node-id", std::to_string(i + 1), "--peers", join(rafts),
                                 "--peer-clients", join(clients_), "--peer-transfers", join(transfers),
                                 "--threads", "2"}));
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

}  // namespace kvbench
