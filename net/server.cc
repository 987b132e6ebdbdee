// The Asio server.
//
// io_context model: one io_context per thread, each run by that thread
// alone, connections dealt round-robin among them (Asio's "server2" shape).
// A connection's handlers then run on one thread without a strand, and a
// get is answered on the thread that read it. Against the earlier shape
// (one io_context run by the whole pool, a strand per connection) the
// server's CPU per op moved little (gets 8.1-10.1 vs 8.6-10.0 µs, sets
// 13.4-15.6 vs 14.2-16.9 µs, `kvbench suite --only dataset`); the shape is
// kept for being simpler. A connection stays on its thread: one client
// pipelining hard uses one core. DB callbacks (a write group's
// acknowledgements) arrive on the DB's threads and post to the
// connection's io_context.
//
// A connection is three coroutines on its io_context: a reader (socket -> framer
// -> handler), a writer, and an idle watchdog. Responses go out in request
// order, every ready one in one write (which is what makes pipelining
// cheap). They are sent with a non-blocking send as soon as a read's
// requests are handled or a batch of acknowledgements arrives (SendReady),
// as Redis answers; the writer coroutine only finishes a send the socket
// could not take whole. Waking the writer for every response cost two
// handler dispatches and a timer cancel per request (about 0.7 µs of a
// get's 9 µs of server CPU).

#include "net/server.h"

#include "net/metrics_http.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <spdlog/spdlog.h>

namespace kvstore::net {

namespace {

using asio::awaitable;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto kNoThrow = asio::experimental::as_tuple(asio::use_awaitable);

}  // namespace

class Connection;

struct Server::Impl {
  DB* db;
  ServerOptions options;
  // ios[0] also runs the acceptor, the signal wait and the shutdown.
  std::vector<std::unique_ptr<asio::io_context>> ios;
  // Keep the other io_contexts running while they have no connection,
  // until the server stops.
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> idle_guards;
  size_t next_io = 0;  // round-robin; AcceptLoop only
  asio::io_context& io() { return *ios[0]; }
  std::optional<tcp::acceptor> acceptor;
  std::optional<asio::signal_set> signals;
  std::unique_ptr<RequestHandler> handler;
  std::unique_ptr<MetricsHttp> metrics;
  uint16_t port = 0;

  std::mutex mu;
  bool stopping = false;                                         // guarded by mu
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections;  // guarded by mu

  awaitable<void> AcceptLoop();
  awaitable<void> Reject(tcp::socket socket);
  awaitable<void> DrainWatch();
  std::vector<std::shared_ptr<Connection>> OpenConnections();
  void StopOnIo();
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server::Impl* server, tcp::socket socket)
      : server_(server),
        socket_(std::move(socket)),
        framer_(server->options.max_line_bytes),
        writer_wake_(socket_.get_executor()),
        reader_wake_(socket_.get_executor()),
        idle_timer_(socket_.get_executor()),
        last_activity_(Clock::now()) {
    asio::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    if (!ec) peer_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    // For SendReady's synchronous sends; Asio's async operations do not
    // depend on it.
    socket_.non_blocking(true, ec);
  }

  // Each coroutine holds the connection alive through its self parameter:
  // a coroutine's parameters live in its frame from the call on, while a
  // shared_from_this() in its body would run only once it first resumes.
  void Start() {
    auto ex = socket_.get_executor();
    asio::co_spawn(ex, ReadLoop(shared_from_this()), asio::detached);
    asio::co_spawn(ex, WriteLoop(shared_from_this()), asio::detached);
    if (server_->options.idle_timeout_ms > 0) {
      asio::co_spawn(ex, IdleLoop(shared_from_this()), asio::detached);
    }
  }

  // Stops taking requests; those already read are still answered. Safe from
  // any thread.
  void StopReading() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->StopReadingOnIo(); });
  }

  // For a shutdown that waited long enough: aborts a write stuck on a
  // client that stopped reading. Requests in flight still finish (their
  // responses are discarded) before the connection closes.
  void Abort() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      self->StopReadingOnIo();
      self->broken_ = true;
      asio::error_code ec;
      self->socket_.cancel(ec);
    });
  }

 private:
  // Shutting down the receive side wakes the pending read with EOF without
  // disturbing a write in progress (cancel() would abort both).
  void StopReadingOnIo() {
    if (stop_reading_) return;
    stop_reading_ = true;
    asio::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_receive, ec);
    reader_wake_.cancel();
  }

  awaitable<void> ReadLoop(std::shared_ptr<Connection> /*self*/) {
    std::vector<char> buf(64 * 1024);
    std::string line;
    bool too_large = false;
    while (!stop_reading_) {
      // Backpressure, checked before every request, not every read: one
      // read can hold thousands of pipelined gets of a large value, and a
      // client that sends without reading would otherwise grow our memory
      // without bound.
      while (Congested() && !stop_reading_) {
        SendReady();
        if (!Congested()) break;
        // The responses it waits for include those of gathered writes.
        server_->handler->FlushWrites(session_);
        reader_wake_.expires_at(Clock::time_point::max());
        reader_waiting_ = true;
        co_await reader_wake_.async_wait(kNoThrow);
        reader_waiting_ = false;
      }
      if (stop_reading_) break;
      LineFramer::Result r = framer_.Next(&line);
      if (r == LineFramer::Result::kLine) {
        if (!line.empty()) Dispatch(line);  // blank lines are keep-alives, not requests
        continue;
      }
      if (r == LineFramer::Result::kTooLarge) {
        too_large = true;
        break;
      }
      // Every complete line of this read is handled: answer the reads among
      // them in one send, and commit their writes as one batch (one
      // group-commit entry, not one per request).
      SendReady();
      server_->handler->FlushWrites(session_);
      auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buf), kNoThrow);
      if (ec || n == 0) break;
      last_activity_ = Clock::now();
      framer_.Append(std::string_view(buf.data(), n));
    }
    server_->handler->FlushWrites(session_);
    if (too_large) {
      spdlog::debug("{}: line over {} bytes; closing", peer_, server_->options.max_line_bytes);
      pending_.emplace_back(RequestHandler::ErrorLine(
          "too_large", "line longer than " + std::to_string(server_->options.max_line_bytes) +
                           " bytes; closing the connection"));
    }
    stop_reading_ = true;
    reading_done_ = true;
    writer_wake_.cancel();
  }

  // Too much unanswered or unwritten: stop taking requests until the
  // writer catches up.
  bool Congested() const {
    return pending_.size() >= server_->options.max_pipeline || ready_bytes_ >= kMaxReadyBytes;
  }

  void Dispatch(const std::string& line) {
    const uint64_t seq = next_seq_++;
    pending_.emplace_back(std::nullopt);
    // Reads usually answer inside Handle, on this thread: store those
    // directly instead of paying a post per response.
    dispatching_on_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    // A raw pointer is enough, and keeps the callback small enough for
    // std::function to hold without allocating: until this request's
    // response reaches Complete, pending_ is not empty, so WriteLoop (which
    // holds a reference) cannot finish; CompleteLater's post holds its own.
    server_->handler->Handle(line, session_, [self = this, seq](std::string resp) {
      if (self->dispatching_on_.load(std::memory_order_relaxed) == std::this_thread::get_id()) {
        self->Complete(seq, std::move(resp));
        return;
      }
      self->CompleteLater(seq, std::move(resp));
    });
    dispatching_on_.store(std::thread::id(), std::memory_order_relaxed);
  }

  // From any thread (a DB callback): hands the response back to the io thread,
  // the only one touching pending_. One post carries every response queued
  // until the io thread runs it, so a write group's acknowledgements, which
  // arrive back to back, wake it once rather than once each.
  void CompleteLater(uint64_t seq, std::string resp) {
    {
      std::lock_guard lock(completed_mu_);
      completed_.emplace_back(seq, std::move(resp));
      if (completed_posted_) return;
      completed_posted_ = true;
    }
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->TakeCompleted(); });
  }

  void TakeCompleted() {
    {
      std::lock_guard lock(completed_mu_);
      taking_.swap(completed_);
      completed_posted_ = false;
    }
    for (auto& [seq, resp] : taking_) Complete(seq, std::move(resp));
    taking_.clear();  // keeps its capacity for the next swap
    SendReady();
  }

  // Stores a response; the caller sends it (SendReady) once it has stored
  // all those at hand.
  void Complete(uint64_t seq, std::string resp) {
    ready_bytes_ += resp.size();
    pending_[seq - first_pending_seq_] = std::move(resp);
  }

  // Moves the answered responses at the head of pending_ into out_.
  void TakeReady() {
    while (!pending_.empty() && pending_.front().has_value() && out_.size() < (1u << 20)) {
      if (!broken_) {
        out_ += *pending_.front();
        out_ += '\n';
      }
      ready_bytes_ -= std::min(ready_bytes_, pending_.front()->size());
      pending_.pop_front();
      ++first_pending_seq_;
    }
  }

  // Sends what is ready now, without blocking, a megabyte at a time until
  // nothing ready is left or the socket is full. What the socket does not
  // take is left in out_ for the writer coroutine, which also owns every
  // send until it has finished that one: responses keep their order.
  void SendReady() {
    while (!writing_) {
      TakeReady();
      if (out_.empty()) break;
      asio::error_code ec;
      const size_t n = socket_.write_some(asio::buffer(out_), ec);  // the socket is non-blocking
      if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
        out_.clear();
        BreakConnection();
      } else if (n == out_.size()) {
        out_.clear();
        last_activity_ = Clock::now();
      } else {
        out_.erase(0, n);
        writing_ = true;
      }
    }
    if (reader_waiting_) reader_wake_.cancel();
    // The writer finishes a partial send, and closes the connection once the
    // reader is done and every request is answered.
    if (writing_ || (reading_done_ && pending_.empty())) writer_wake_.cancel();
  }

  // The client is gone. Keep draining (discarding) until every request it
  // sent has finished, so no write outlives us.
  void BreakConnection() {
    broken_ = true;
    StopReadingOnIo();
  }

  awaitable<void> WriteLoop(std::shared_ptr<Connection> /*self*/) {
    for (;;) {
      if (!writing_) {
        TakeReady();
        writing_ = !out_.empty();
      }
      if (writing_) {
        if (reader_waiting_) reader_wake_.cancel();
        auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(out_), kNoThrow);
        (void)n;
        out_.clear();
        writing_ = false;
        if (ec) {
          BreakConnection();
        } else {
          last_activity_ = Clock::now();
        }
        continue;
      }
      if (reading_done_ && pending_.empty()) break;
      writer_wake_.expires_at(Clock::time_point::max());
      co_await writer_wake_.async_wait(kNoThrow);
    }
    Close();
  }

  awaitable<void> IdleLoop(std::shared_ptr<Connection> /*self*/) {
    const auto timeout = std::chrono::milliseconds(server_->options.idle_timeout_ms);
    while (!closed_ && !stop_reading_) {
      // While requests are in flight the connection is not idle however
      // long they take; look again a full timeout later rather than spin.
      auto deadline = last_activity_ + timeout;
      if (deadline <= Clock::now()) deadline = Clock::now() + timeout;
      idle_timer_.expires_at(deadline);
      co_await idle_timer_.async_wait(kNoThrow);
      if (closed_ || stop_reading_) break;
      if (pending_.empty() && Clock::now() - last_activity_ >= timeout) {
        spdlog::debug("{}: idle for {} ms; closing", peer_, server_->options.idle_timeout_ms);
        StopReadingOnIo();
      }
    }
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    asio::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    idle_timer_.cancel();
    reader_wake_.cancel();
    server_->handler->connections.fetch_sub(1);
    std::lock_guard lock(server_->mu);
    server_->connections.erase(this);
  }

  Server::Impl* const server_;
  tcp::socket socket_;  // its executor is this connection's io_context, run by one thread
  std::string peer_ = "?";
  LineFramer framer_;
  std::shared_ptr<Session> session_ = [] {
    auto s = std::make_shared<Session>();
    s->coalesce_writes = true;  // ReadLoop flushes after each read
    return s;
  }();
  // Responses in request order: pending_[i] belongs to request
  // first_pending_seq_ + i, empty until the handler answers it.
  std::deque<std::optional<std::string>> pending_;
  uint64_t first_pending_seq_ = 0;
  // Responses taken from pending_ and not yet sent. Not empty only while
  // writing_: the writer coroutine owns the socket's send side until it has
  // sent them all.
  std::string out_;
  bool writing_ = false;
  bool reader_waiting_ = false;  // on reader_wake_, for the writer to catch up
  uint64_t next_seq_ = 0;
  // Bytes of answered responses not yet written. A response held in full
  // counts once Complete stores it; the too_large line is not counted.
  size_t ready_bytes_ = 0;
  static constexpr size_t kMaxReadyBytes = 32u << 20;
  // The thread running Handle for this connection, while it does; a default id
  // otherwise. Only that thread can match its own id, so other threads
  // reading it (a DB callback) always post.
  std::atomic<std::thread::id> dispatching_on_{};
  // Responses answered off the io thread, waiting for one post to store them.
  std::mutex completed_mu_;
  std::vector<std::pair<uint64_t, std::string>> completed_;  // guarded by completed_mu_
  bool completed_posted_ = false;                             // guarded by completed_mu_
  std::vector<std::pair<uint64_t, std::string>> taking_;      // io thread only
  // Used as condition variables: a waiter sleeps until cancel().
  asio::steady_timer writer_wake_;
  asio::steady_timer reader_wake_;
  asio::steady_timer idle_timer_;
  Clock::time_point last_activity_;
  bool stop_reading_ = false;
  bool reading_done_ = false;
  bool broken_ = false;
  bool closed_ = false;
};

awaitable<void> Server::Impl::AcceptLoop() {
  for (;;) {
    asio::io_context& target = *ios[next_io++ % ios.size()];
    auto [ec, socket] = co_await acceptor->async_accept(target, kNoThrow);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) break;
      // Out of file descriptors, most likely: back off rather than spin.
      spdlog::warn("accept failed: {}", ec.message());
      asio::steady_timer t(io(), std::chrono::milliseconds(50));
      co_await t.async_wait(kNoThrow);
      continue;
    }
    asio::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (handler->connections.load() >= options.max_connections) {
      handler->connections_rejected.fetch_add(1);
      auto ex = socket.get_executor();
      asio::co_spawn(ex, Reject(std::move(socket)), asio::detached);
      continue;
    }
    handler->connections.fetch_add(1);
    handler->connections_total.fetch_add(1);
    auto c = std::make_shared<Connection>(this, std::move(socket));
    {
      std::lock_guard lock(mu);
      connections.emplace(c.get(), c);
    }
    c->Start();
  }
}

awaitable<void> Server::Impl::Reject(tcp::socket socket) {
  std::string line = RequestHandler::ErrorLine(
      "unavailable", "too many connections (limit " + std::to_string(options.max_connections) + ")");
  line += '\n';
  co_await asio::async_write(socket, asio::buffer(line), kNoThrow);
  asio::error_code ec;
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
}

std::vector<std::shared_ptr<Connection>> Server::Impl::OpenConnections() {
  std::vector<std::shared_ptr<Connection>> open;
  std::lock_guard lock(mu);
  for (auto& [ptr, weak] : connections) {
    if (auto c = weak.lock()) open.push_back(std::move(c));
  }
  return open;
}

void Server::Impl::StopOnIo() {
  {
    std::lock_guard lock(mu);
    if (stopping) return;
    stopping = true;
  }
  std::vector<std::shared_ptr<Connection>> open = OpenConnections();
  spdlog::info("stopping: {} connections to drain", open.size());
  asio::error_code ec;
  acceptor->close(ec);
  signals->cancel(ec);
  for (auto& c : open) c->StopReading();
  // Each io_context's run() now returns once its connections have drained.
  for (auto& guard : idle_guards) guard.reset();
  asio::co_spawn(io(), DrainWatch(), asio::detached);
}

// Gives connections drain_timeout_ms to answer what they have read, then
// aborts the ones still stuck (a client that stopped reading its responses
// would otherwise hold the shutdown forever). Polls rather than waiting on a
// signal so that it alone touches its timer.
awaitable<void> Server::Impl::DrainWatch() {
  const auto deadline = Clock::now() + std::chrono::milliseconds(options.drain_timeout_ms);
  asio::steady_timer timer(io());
  for (;;) {
    {
      std::lock_guard lock(mu);
      if (connections.empty()) co_return;
    }
    if (Clock::now() >= deadline) {
      std::vector<std::shared_ptr<Connection>> stuck = OpenConnections();
      spdlog::warn("stopping: aborting {} connections still busy after {} ms", stuck.size(),
                   options.drain_timeout_ms);
      for (auto& c : stuck) c->Abort();
      co_return;
    }
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(kNoThrow);
  }
}

Server::Server(DB* db, ServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->db = db;
  impl_->options = std::move(options);
  if (impl_->options.threads == 0) {
    impl_->options.threads = std::max(1u, std::thread::hardware_concurrency());
  }
  Impl* impl = impl_.get();
  for (size_t i = 0; i < impl->options.threads; ++i) {
    // Concurrency hint 1: each io_context is run by one thread only.
    impl->ios.push_back(std::make_unique<asio::io_context>(1));
    if (i > 0) impl->idle_guards.push_back(asio::make_work_guard(*impl->ios.back()));
  }
  impl->acceptor.emplace(impl->io());
  impl->signals.emplace(impl->io());
  // Work moved off a DB callback thread (a request whose key locks were
  // granted there) goes to the io_contexts in turn.
  auto next_post = std::make_shared<std::atomic<size_t>>(0);
  impl_->handler = std::make_unique<RequestHandler>(
      db, impl_->options.handler, [impl, next_post](std::function<void()> fn) {
        asio::post(*impl->ios[next_post->fetch_add(1, std::memory_order_relaxed) % impl->ios.size()], std::move(fn));
      });
}

Server::~Server() = default;

Status Server::Start() {
  asio::error_code ec;
  tcp::resolver resolver(impl_->io());
  auto results = resolver.resolve(impl_->options.host, std::to_string(impl_->options.port), ec);
  if (ec || results.empty()) {
    return Status::IOError("cannot resolve " + impl_->options.host + ": " + ec.message());
  }
  tcp::endpoint ep = results.begin()->endpoint();
  auto& a = *impl_->acceptor;
  if (a.open(ep.protocol(), ec); ec) return Status::IOError("socket: " + ec.message());
  if (a.set_option(tcp::acceptor::reuse_address(true), ec); ec) {
    return Status::IOError("setsockopt: " + ec.message());
  }
  if (a.bind(ep, ec); ec) {
    return Status::IOError("bind " + impl_->options.host + ":" +
                           std::to_string(impl_->options.port) + ": " + ec.message());
  }
  if (a.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return Status::IOError("listen: " + ec.message());
  }
  impl_->port = a.local_endpoint(ec).port();
  if (impl_->options.metrics_port >= 0) {
    RequestHandler* h = impl_->handler.get();
    impl_->metrics = std::make_unique<MetricsHttp>([h] { return h->PrometheusText(); },
                                                   [h](std::string* why) { return h->Healthy(why); });
    Status s = impl_->metrics->Start(impl_->options.host, impl_->options.metrics_port);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

uint16_t Server::port() const { return impl_->port; }

int Server::metrics_port() const { return impl_->metrics ? impl_->metrics->port() : -1; }

void Server::Run() {
  Impl* impl = impl_.get();
  if (impl->options.handle_signals) {
    impl->signals->add(SIGINT);
    impl->signals->add(SIGTERM);
    impl->signals->async_wait([impl](const asio::error_code& ec, int sig) {
      if (ec) return;
      spdlog::info("signal {}: stopping", sig);
      impl->StopOnIo();
    });
  }
  asio::co_spawn(impl->io(), impl->AcceptLoop(), asio::detached);
  // Each run() returns once its connections' coroutines have finished (and,
  // for ios[0], the acceptor and the signal wait): that is the drain.
  std::vector<std::thread> pool;
  for (size_t i = 1; i < impl->ios.size(); ++i) pool.emplace_back([impl, i] { impl->ios[i]->run(); });
  impl->io().run();
  for (auto& t : pool) t.join();
  if (impl->metrics) impl->metrics->Stop();
}

void Server::Stop() {
  Impl* impl = impl_.get();
  asio::post(impl->io(), [impl] { impl->StopOnIo(); });
}

}  // namespace kvstore::net
