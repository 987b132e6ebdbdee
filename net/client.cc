#include "net/client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>
#include <cstring>

#include <nlohmann/json.hpp>

namespace kvstore::net {

namespace {

Status Errno(const std::string& what) { return Status::IOError(what + ": " + std::strerror(errno)); }

// Splits "host:port"; the last colon separates, so "[::1]:9000" works too.
bool SplitAddress(const std::string& address, std::string* host, std::string* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  *host = address.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  *port = address.substr(colon + 1);
  return true;
}

}  // namespace

Client::Client(ClientOptions options) : options_(std::move(options)) {}

Client::~Client() { Close(); }

void Client::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  connected_to_.clear();
  buffer_.clear();
}

Status Client::ConnectTo(const std::string& address) {
  Close();
  std::string host, port;
  if (!SplitAddress(address, &host, &port)) return Status::InvalidArgument("not host:port: " + address);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return Status::IOError("resolve " + address + ": " + gai_strerror(rc));
  }
  Status s = Status::IOError("connect " + address + ": no address");
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    // On Linux SO_SNDTIMEO bounds connect() as well as send(); SO_RCVTIMEO
    // bounds each recv(), so a wait for a response is one blocking recv
    // rather than a poll() and then a recv() (two system calls per response
    // on a 2-core machine where client and server share the CPUs).
    timeval tv{options_.timeout_ms / 1000, (options_.timeout_ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      fd_ = fd;
      connected_to_ = address;
      s = Status::OK();
      break;
    }
    s = Errno("connect " + address);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (!s.ok() || options_.token.empty()) return s;
  std::string response;
  s = Exchange(nlohmann::json{{"op", "auth"}, {"token", options_.token}}.dump(), &response);
  if (!s.ok()) return s;
  nlohmann::json r = nlohmann::json::parse(response, nullptr, false);
  if (!r.is_object() || !r.value("ok", false)) {
    Close();
    return Status::InvalidArgument("auth refused by " + address);
  }
  return Status::OK();
}

Status Client::EnsureConnected() {
  if (fd_ >= 0) return Status::OK();
  Status s = Status::InvalidArgument("no addresses");
  for (const std::string& a : options_.addresses) {
    s = ConnectTo(a);
    if (s.ok()) return s;
  }
  return s;
}

Status Client::SendAll(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Status s = Errno("send to " + connected_to_);
      Close();
      return s;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::OK();
}

Status Client::ReadLine(std::string* line) {
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      line->assign(buffer_, 0, nl);
      buffer_.erase(0, nl + 1);
      return Status::OK();
    }
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);  // bounded by SO_RCVTIMEO
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      Status s = Status::IOError("timed out waiting for " + connected_to_);
      Close();  // a late response would be taken for the next request's
      return s;
    }
    if (n <= 0) {
      Status s = n == 0 ? Status::IOError(connected_to_ + " closed the connection")
                        : Errno("recv from " + connected_to_);
      Close();
      return s;
    }
    buffer_.append(tmp, static_cast<size_t>(n));
  }
}

Status Client::Exchange(std::string_view request, std::string* response) {
  std::string line(request);
  line += '\n';
  Status s = SendAll(line);
  if (s.ok()) s = ReadLine(response);
  return s;
}

Status Client::Call(std::string_view request, std::string* response) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.failover_ms);
  int backoff_ms = 10;
  // Waits before the next try; false once failover_ms is spent.
  auto wait = [&] {
    if (std::chrono::steady_clock::now() + std::chrono::milliseconds(backoff_ms) > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min(backoff_ms * 2, 200);
    return true;
  };
  int redirects = 0;
  for (;;) {
    Status s = EnsureConnected();
    if (!s.ok()) {
      if (wait()) continue;
      return s;
    }
    s = Exchange(request, response);
    if (!s.ok()) return s;
    if (response->find("not_leader") == std::string::npos) return s;
    nlohmann::json r = nlohmann::json::parse(*response, nullptr, false);
    if (!r.is_object() || !r.contains("error") || !r["error"].is_object()) return s;
    const nlohmann::json& err = r["error"];
    if (err.value("code", "") != "not_leader") return s;
    if (err.contains("leader") && err["leader"].is_string() && redirects < options_.max_redirects) {
      ++redirects;
      if (ConnectTo(err["leader"].get<std::string>()).ok()) continue;
    }
    // No leader named (an election is on), or it cannot be reached: try the
    // next address after a pause.
    if (!wait()) return Status::OK();
    Close();
    if (options_.addresses.size() > 1) {
      std::rotate(options_.addresses.begin(), options_.addresses.begin() + 1, options_.addresses.end());
    }
    redirects = 0;
  }
}

Status Client::CallMany(const std::vector<std::string>& requests, std::vector<std::string>* responses) {
  responses->clear();
  Status s = EnsureConnected();
  if (!s.ok()) return s;
  std::string out;
  for (const std::string& r : requests) {
    out += r;
    out += '\n';
  }
  // Send and read together, so a long pipeline cannot deadlock with both
  // sides' socket buffers full.
  // Usually the whole pipeline fits the socket buffer: try at once, and
  // poll only when it does not.
  ssize_t first = ::send(fd_, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (first < 0 && errno != EAGAIN && errno != EINTR) {
    Status e = Errno("send to " + connected_to_);
    Close();
    return e;
  }
  size_t sent = first > 0 ? static_cast<size_t>(first) : 0;
  std::string line;
  while (responses->size() < requests.size()) {
    if (sent < out.size()) {
      pollfd p{fd_, POLLOUT | POLLIN, 0};
      if (::poll(&p, 1, options_.timeout_ms) <= 0) {
        Close();
        return Status::IOError("timed out talking to " + connected_to_);
      }
      if (p.revents & POLLOUT) {
        ssize_t n = ::send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
          Status e = Errno("send to " + connected_to_);
          Close();
          return e;
        }
        if (n > 0) sent += static_cast<size_t>(n);
      }
      if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
    }
    // Take whatever complete lines have arrived (at least one).
    s = ReadLine(&line);
    if (!s.ok()) return s;
    responses->push_back(std::move(line));
    while (responses->size() < requests.size()) {
      size_t nl = buffer_.find('\n');
      if (nl == std::string::npos) break;
      responses->emplace_back(buffer_, 0, nl);
      buffer_.erase(0, nl + 1);
    }
  }
  return Status::OK();
}

}  // namespace kvstore::net
