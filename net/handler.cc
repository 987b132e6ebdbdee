#include "net/handler.h"

#include <mutex>
#include <thread>

#include <chrono>
#include <cmath>
#include <iterator>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "net/fast_request.h"
#include "net/json_guard.h"
#include "net/replication.h"
#include "net/write_command.h"

namespace kvstore::net {

using json = nlohmann::json;

namespace {

// Thrown by request validation and caught in Handle: a request that cannot
// be served, answered with this code. Never leaves this file.
struct ClientError {
  std::string code;
  std::string message;
};

[[noreturn]] void Fail(std::string code, std::string message) {
  throw ClientError{std::move(code), std::move(message)};
}

// Dumps without throwing: stored keys and values were validated UTF-8 when
// they came in, but bytes written by an embedder need not be.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string QuoteKey(std::string_view key) { return Dump(json(std::string(key))); }

struct OpEntry {
  const char* name;
  Op op;
};
constexpr OpEntry kOps[] = {
    {"ping", Op::kPing},
    {"auth", Op::kAuth},
    {"get", Op::kGet},
    {"set", Op::kSet},
    {"delete", Op::kDelete},
    {"bulk_set", Op::kBulkSet},
    {"bulk_get", Op::kBulkGet},
    {"scan", Op::kScan},
    {"cas", Op::kCas},
    {"txn", Op::kTxn},
    {"stats", Op::kStats},
    {"flush", Op::kFlush},
    {"compact", Op::kCompact},
    {"checkpoint", Op::kCheckpoint},
    {"search_by_value", Op::kSearchByValue},
    {"fulltext_search", Op::kFulltextSearch},
    {"semantic_search", Op::kSemanticSearch},
    {"transfer_leader", Op::kTransferLeader},
};

std::optional<Op> LookupOp(std::string_view name) {
  for (const OpEntry& e : kOps) {
    if (name == e.name) return e.op;
  }
  return std::nullopt;
}

// The engine's Status as a protocol error code.
const char* CodeFor(const Status& s) {
  switch (s.code()) {
    case Status::Code::kNotFound: return "not_found";
    case Status::Code::kInvalidArgument: return "bad_request";
    case Status::Code::kNoSpace: return "no_space";
    case Status::Code::kReadOnly: return "read_only";
    case Status::Code::kNotSupported: return "unavailable";
    default: return "internal";
  }
}

const json& Field(const json& req, const char* name) {
  auto it = req.find(name);
  if (it == req.end()) Fail("bad_request", std::string("missing field \"") + name + "\"");
  return *it;
}

const json* OptionalField(const json& req, const char* name) {
  auto it = req.find(name);
  return it == req.end() ? nullptr : &*it;
}

// A put's "vector" (set, bulk_set), checked here as the engine checks it:
// a bad one is a bad_request before anything is proposed or written (a
// replicated write the engine refused would stop every node applying it).
// Empty when the request has none.
std::vector<float> PutVector(const json* v, size_t dimension) {
  if (v == nullptr) return {};
  if (dimension == 0) Fail("unavailable", "this server keeps no semantic index: a \"vector\" has nowhere to go");
  if (!v->is_array() || v->size() != dimension) {
    Fail("bad_request", "\"vector\" must be an array of " + std::to_string(dimension) +
                            " numbers, the semantic index's dimension");
  }
  std::vector<float> out;
  out.reserve(dimension);
  bool any = false;
  for (const json& x : *v) {
    if (!x.is_number()) Fail("bad_request", "\"vector\" must hold numbers only");
    const float f = x.get<float>();
    if (!std::isfinite(f)) Fail("bad_request", "\"vector\" holds a number beyond float range");
    any |= f != 0.0f;
    out.push_back(f);
  }
  if (!any) Fail("bad_request", "\"vector\" is all zeros");
  return out;
}

constexpr const char* kBulkItemShape =
    "each item must be [key, value], [key, value, vector] or {\"key\":...,\"value\":...[,\"vector\":...]}";


std::string_view KeyOf(const json& j, const char* what = "key") {
  if (!j.is_string()) Fail("bad_request", std::string(what) + " must be a string");
  const std::string& k = j.get_ref<const std::string&>();
  if (k.size() > kMaxKeySize) {
    Fail("too_large", "key is " + std::to_string(k.size()) + " bytes; the limit is " +
                          std::to_string(kMaxKeySize));
  }
  return k;
}

std::string_view StringField(const json& req, const char* name) {
  const json& j = Field(req, name);
  if (!j.is_string()) Fail("bad_request", std::string("\"") + name + "\" must be a string");
  return j.get_ref<const std::string&>();
}

// The canonical stored form of a value: nlohmann's compact dump (object
// members in key order), so equal JSON values compare equal as bytes.
std::string Canonical(const json& value) {
  std::string text = Dump(value);
  if (text.size() > kMaxValueSize) {
    Fail("too_large", "value is " + std::to_string(text.size()) + " bytes; the limit is " +
                          std::to_string(kMaxValueSize));
  }
  return text;
}

const json& ArrayField(const json& req, const char* name, size_t max) {
  const json& j = Field(req, name);
  if (!j.is_array()) Fail("bad_request", std::string("\"") + name + "\" must be an array");
  if (j.size() > max) {
    Fail("too_large", std::string("\"") + name + "\" has " + std::to_string(j.size()) +
                          " entries; the limit is " + std::to_string(max));
  }
  return j;
}

void CheckBatchSize(const WriteBatch& b) {
  if (b.ByteSize() > kMaxBatchSize) {
    Fail("too_large", "batch is " + std::to_string(b.ByteSize()) + " bytes; the limit is " +
                          std::to_string(kMaxBatchSize));
  }
}

// Upper bounds (seconds) of the request latency histogram buckets, as
// Prometheus "le" labels; a last +Inf bucket is implied.
constexpr double kLatencyBounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                     0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5, 5, 10};
constexpr size_t kLatencyBuckets = std::size(kLatencyBounds) + 1;

// Per-op counters, lock-free so every request can update them.
struct OpCounters {
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> errors{0};
  std::array<std::atomic<uint64_t>, kLatencyBuckets> latency{};  // not cumulative
  std::atomic<uint64_t> latency_ns{0};

  void Observe(std::chrono::steady_clock::duration d, bool error) {
    if (error) errors.fetch_add(1, std::memory_order_relaxed);
    const double seconds = std::chrono::duration<double>(d).count();
    size_t b = 0;
    while (b < std::size(kLatencyBounds) && seconds > kLatencyBounds[b]) ++b;
    latency[b].fetch_add(1, std::memory_order_relaxed);
    latency_ns.fetch_add(static_cast<uint64_t>(std::chrono::nanoseconds(d).count()),
                         std::memory_order_relaxed);
  }
};

// True when JSON writes text as it is: printable ASCII without '"' or '\\'.
bool PlainAscii(std::string_view text) {
  for (char c : text) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') return false;
  }
  return true;
}

// One reply, sent exactly once even if both a validation error and a late
// callback race to answer. Records the request's latency and outcome in
// counters as it goes.
class Reply {
 public:
  Reply(std::string id_prefix, RequestHandler::Done done, OpCounters* counters)
      : id_prefix_(std::move(id_prefix)), done_(std::move(done)), counters_(counters) {}

  void Ok(std::string_view result_json) {
    if (sent_.exchange(true)) return;
    counters_->Observe(std::chrono::steady_clock::now() - start_, false);
    std::string line;
    line.reserve(id_prefix_.size() + result_json.size() + 24);
    line += '{';
    line += id_prefix_;
    line += "\"ok\":true,\"result\":";
    line += result_json;
    line += '}';
    done_(std::move(line));
  }

  void Error(std::string_view code, std::string_view message, const json* extra = nullptr) {
    if (sent_.exchange(true)) return;
    counters_->Observe(std::chrono::steady_clock::now() - start_, true);
    // Client errors are routine for a server: debug, not info. Messages
    // never carry a token (auth failures say only "wrong token").
    spdlog::debug("request failed: {}: {}", code, message);
    std::string line;
    if (extra == nullptr && PlainAscii(code) && PlainAscii(message)) {
      // What Dump gives for these (members in name order, nothing to
      // escape), without building a DOM: a miss is a routine answer.
      line.reserve(id_prefix_.size() + code.size() + message.size() + 48);
      line += '{';
      line += id_prefix_;
      line += R"("ok":false,"error":{"code":")";
      line += code;
      line += R"(","message":")";
      line += message;
      line += "\"}}";
    } else {
      json err = {{"code", code}, {"message", message}};
      if (extra != nullptr) err.update(*extra);
      line = "{" + id_prefix_ + "\"ok\":false,\"error\":" + Dump(err) + "}";
    }
    done_(std::move(line));
  }

  void Error(const Status& s) { Error(CodeFor(s), s.ToString()); }

 private:
  const std::string id_prefix_;  // "\"id\":<id>," or empty
  RequestHandler::Done done_;
  OpCounters* const counters_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::atomic<bool> sent_{false};
};

using ReplyPtr = std::shared_ptr<Reply>;

// Runs fn, answering with the error when it throws: no exception leaves the
// handler (a client's mistake is a ClientError, anything else internal).
template <class Fn>
void AnswerErrorsOf(const ReplyPtr& reply, Fn&& fn) {
  try {
    fn();
  } catch (const ClientError& e) {
    reply->Error(e.code, e.message);
  } catch (const std::exception& e) {
    reply->Error("internal", e.what());
  } catch (...) {
    reply->Error("internal", "unexpected failure");
  }
}

}  // namespace

namespace {

// The fast path: true when line is a ping, get, set or delete that
// ParseFastRequest understood and that passes every check the full path
// would make (key present and within its limit, value present and within
// its limit for set). Anything else, error or not, goes to the full parser.
bool ParseSimple(std::string_view line, std::optional<Op>* op, std::string* id_prefix,
                 FastRequest* out) {
  FastRequest& fast = *out;  // its views point into line
  if (!ParseFastRequest(line, &fast)) return false;
  std::optional<Op> o = LookupOp(fast.op);
  if (!o) return false;
  switch (*o) {
    case Op::kPing:
      break;
    case Op::kSet:
      if (fast.value.empty() || fast.value.size() > kMaxValueSize) return false;
      [[fallthrough]];
    case Op::kGet:
    case Op::kDelete:
      if (!fast.has_key || fast.key.size() > kMaxKeySize) return false;
      break;
    default:
      return false;
  }
  *op = o;
  if (!fast.id.empty()) {
    id_prefix->reserve(fast.id.size() + 6);
    id_prefix->append("\"id\":").append(fast.id).append(",");
  }
  return true;
}

// The fast path of bulk_set: true when line is a bulk_set that
// ParseFastBulkSet understood and that passes every check the full path
// would make (item count, key and value sizes); *batch then holds its
// items. Anything else goes to the full parser, which answers as it always
// did.
bool ParseBulk(std::string_view line, size_t max_items, std::string* id_prefix, WriteBatch* batch,
               size_t* count) {
  FastBulkSet bulk;
  if (!ParseFastBulkSet(line, &bulk) || bulk.items.size() > max_items) return false;
  for (const auto& [key, value] : bulk.items) {
    if (key.size() > kMaxKeySize || value.size() > kMaxValueSize) return false;
  }
  for (const auto& [key, value] : bulk.items) batch->Put(key, value);
  *count = bulk.items.size();
  if (!bulk.id.empty()) id_prefix->append("\"id\":").append(bulk.id).append(",");
  return true;
}

// Writes gathered into one batch (Session::coalesce_writes) stop growing
// here: the engine's own group commit caps a group at about this much, so a
// bigger batch would only delay the first acknowledgement.
constexpr size_t kMaxCoalescedBytes = 1u << 20;

}  // namespace

// The writes of one connection gathered between two FlushWrites.
struct Session::Coalesced {
  WriteBatch batch;
  std::vector<uint32_t> stripes;  // shared holds, one per write (a stripe may repeat)
  std::vector<ReplyPtr> replies;  // in request order
};

Session::Session() = default;
Session::~Session() = default;

const char* OpName(Op op) {
  for (const OpEntry& e : kOps) {
    if (e.op == op) return e.name;
  }
  return "?";
}

namespace {
void AnswerWith(const ReplyPtr& reply, const ReplicaAnswer& a);
}  // namespace

struct RequestHandler::Impl {
  RequestHandler* owner;
  DB* db;
  HandlerOptions options;
  Post post;
  KeyLocks locks;
  std::array<OpCounters, static_cast<size_t>(Op::kCount)> ops;
  OpCounters bad_requests;  // lines that failed before an op was known
  // flush, compact and checkpoint block for seconds: each runs on a thread
  // of its own, joined before the handler (and so the DB) goes away.
  std::mutex admin_mu;
  std::vector<std::thread> admin_threads;

  // What a put's vector must have: the store's semantic index dimension,
  // asked once (0: no semantic index).
  std::once_flag vector_dimension_once;
  size_t vector_dimension = 0;
  size_t VectorDimension() {
    std::call_once(vector_dimension_once, [this] { vector_dimension = db->GetStats().index_vector_dimension; });
    return vector_dimension;
  }

  ~Impl() {
    std::lock_guard lock(admin_mu);
    for (std::thread& t : admin_threads) t.join();
  }
  void Admin(Op op, const json& req, const ReplyPtr& reply);

  WriteOptions write_options() const {
    WriteOptions w;
    w.sync = options.sync;
    return w;
  }

  // replicated: the request already went through Replicate (its read
  // barrier passed), so it runs locally now.
  void Dispatch(Op op, const json& req, Session* session, const ReplyPtr& reply,
                bool replicated = false);
  // Adds a simple set or delete to session's gathered writes when it may
  // start at once (nothing of the session queued, its key's stripe free);
  // false, touching nothing, otherwise.
  bool Coalesce(Op op, const FastRequest& fast, std::string& id_prefix,
                RequestHandler::Done& done, OpCounters* counters,
                const std::shared_ptr<Session>& session);
  // The fast path's ping, get, set and delete: key and value (canonical
  // text) already extracted and within their limits.
  void DispatchSimple(Op op, std::string_view key, std::string value, Session* session,
                      const ReplyPtr& reply);
  void CheckAuth(Op op, const Session* session) const {
    if (!options.auth_token.empty() && !session->authenticated && op != Op::kAuth) {
      Fail("unauthorized", "authenticate first: {\"op\":\"auth\",\"token\":...}");
    }
  }

  // Held key locks, released when the last reference goes: after the
  // write's callback when there is a write, at once when there is none or
  // the request failed.
  struct LockGuard {
    LockGuard(KeyLocks* l, KeyLocks::Held h) : locks(l), held(std::move(h)) {}
    LockGuard(const LockGuard&) = delete;
    LockGuard& operator=(const LockGuard&) = delete;
    ~LockGuard() { locks->Release(held); }
    KeyLocks* locks;
    KeyLocks::Held held;
  };
  using GuardPtr = std::shared_ptr<LockGuard>;

  // Locks keys, then runs body (inline, or posted when the grant came late),
  // answering with the error when body throws.
  void WithLocks(const std::vector<std::string_view>& keys, KeyLocks::Mode mode,
                 const ReplyPtr& reply, std::function<void(GuardPtr)> body);
  // Hands batch to the engine; its callback drops the locks, then answers
  // with result.
  void Commit(WriteBatch batch, GuardPtr guard, const ReplyPtr& reply, std::string result);
  // Reads for EvaluateWriteCommand / EvaluateOnce: the store's newest value.
  CommandReader StoreReader() {
    return [this](std::string_view key, std::optional<std::string>* value) {
      std::string v;
      Status s = db->Get(ReadOptions{}, key, &v);
      if (s.IsNotFound()) return Status::OK();
      if (s.ok()) *value = std::move(v);
      return s;
    };
  }
  // Commits batch, then gives answer (which may be an error that still
  // wrote something: a remembered request_id's conflict).
  void CommitAnswer(WriteBatch batch, GuardPtr guard, const ReplyPtr& reply, ReplicaAnswer answer);
  // A write through its WriteCommand under exclusive key locks, as a txn
  // always is and a write naming a request_id is on a standalone server
  // (at most once: EvaluateOnce).
  void RunCommand(Op op, const json& req, const ReplyPtr& reply);

  void Get(const json& req, const ReplyPtr& reply);
  void Set(const json& req, const ReplyPtr& reply);
  void Delete(const json& req, const ReplyPtr& reply);
  void GetKey(std::string_view key, const ReplyPtr& reply);
  void SetKey(std::string_view key, std::string value, const ReplyPtr& reply);
  void DeleteKey(std::string_view key, const ReplyPtr& reply);
  // Locks key's stripe shared, then commits batch (a blind write of key).
  void WriteKey(std::string_view key, WriteBatch batch, const ReplyPtr& reply);
  void BulkSet(const json& req, const ReplyPtr& reply);
  // The fast path's bulk_set: the items already in batch, within limits.
  void BulkSetBatch(std::shared_ptr<WriteBatch> batch, size_t count, Session* session,
                    const ReplyPtr& reply);
  void BulkGet(const json& req, const ReplyPtr& reply);
  void Scan(const json& req, const ReplyPtr& reply);
  void Search(Op op, const json& req, const ReplyPtr& reply);
  void Cas(const json& req, const ReplyPtr& reply);
  void Txn(const json& req, const ReplyPtr& reply);
  void Stats(const ReplyPtr& reply);
  void Auth(const json& req, Session* session, const ReplyPtr& reply);

  // Cluster mode (options.replication set); see the end of this file.
  bool Replicate(Op op, const json& req, const ReplyPtr& reply);
  void ReplicateSimple(Op op, std::string_view key, std::string value, const ReplyPtr& reply);
  void Propose(const WriteCommand& command, const ReplyPtr& reply);
  void AfterBarrier(const ReplyPtr& reply, std::function<void()> read);

  // Reads key's stored text; nullopt when missing. Fails the request on an
  // engine error.
  std::optional<std::string> Read(std::string_view key) {
    std::string value;
    Status s = db->Get(ReadOptions{}, key, &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) Fail(CodeFor(s), s.ToString());
    return value;
  }
};

RequestHandler::RequestHandler(DB* db, HandlerOptions options, Post post)
    : impl_(std::make_unique<Impl>()) {
  impl_->owner = this;
  impl_->db = db;
  impl_->options = std::move(options);
  impl_->post = std::move(post);
}

RequestHandler::~RequestHandler() = default;

std::string RequestHandler::ErrorLine(std::string_view code, std::string_view message) {
  json err = {{"ok", false}, {"error", {{"code", code}, {"message", message}}}};
  return Dump(err);
}

void RequestHandler::Handle(std::string_view line, std::shared_ptr<Session> session, Done done) {
  std::string id_prefix;
  std::optional<Op> op;
  json req;
  // Set when the fast path took the request (see fast_request.h): then req
  // stays null and these hold the key and the value's canonical text.
  bool simple = false;
  FastRequest fast;
  // Set when the fast path took a bulk_set: its items are in bulk.
  std::shared_ptr<WriteBatch> bulk;
  size_t bulk_count = 0;
  ClientError early;
  try {
    if (!IsValidUtf8(line)) Fail("bad_request", "request is not valid UTF-8");
    // A line the fast path takes is one flat object (depth 1), so it needs
    // no nesting check unless the limit is below 1.
    simple = impl_->options.fast_path && impl_->options.max_depth >= 1 &&
             ParseSimple(line, &op, &id_prefix, &fast);
    // A bulk_set the fast path takes nests three deep ({"items":[[...]]});
    // cluster mode replicates the parsed request, so it parses in full.
    if (!simple && impl_->options.fast_path && impl_->options.max_depth >= 3 &&
        impl_->options.replication == nullptr) {
      auto batch = std::make_shared<WriteBatch>();
      if (ParseBulk(line, impl_->options.max_batch_ops, &id_prefix, batch.get(), &bulk_count)) {
        op = Op::kBulkSet;
        bulk = std::move(batch);
      }
    }
    if (!simple && !bulk && !NestingWithin(line, impl_->options.max_depth)) {
      Fail("bad_request",
           "request nests deeper than " + std::to_string(impl_->options.max_depth) + " levels");
    }
    if (!simple && !bulk) {
      req = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (req.is_discarded()) Fail("bad_request", "malformed JSON");
      if (!req.is_object()) Fail("bad_request", "a request must be a JSON object");
      if (const json* id = OptionalField(req, "id")) {
        if (id->is_structured()) {
          Fail("bad_request", "\"id\" must be a string, number, boolean or null");
        }
        id_prefix = "\"id\":" + Dump(*id) + ",";
      }
      const json* name = OptionalField(req, "op");
      if (name == nullptr) Fail("bad_request", "missing field \"op\"");
      if (!name->is_string()) Fail("bad_request", "\"op\" must be a string");
      op = LookupOp(name->get_ref<const std::string&>());
      if (!op) {
        // Quote at most a prefix: the name is the client's, and may be huge.
        Fail("unknown_op", "unknown op \"" + name->get_ref<const std::string&>().substr(0, 64) + "\"");
      }
    }
  } catch (ClientError& e) {
    early = std::move(e);
  } catch (const std::exception& e) {
    early = {"internal", e.what()};
  }

  OpCounters* counters = op ? &impl_->ops[static_cast<size_t>(*op)] : &impl_->bad_requests;
  counters->count.fetch_add(1, std::memory_order_relaxed);
  if (!early.code.empty()) {
    Reply(std::move(id_prefix), std::move(done), counters).Error(early.code, early.message);
    return;
  }
  const bool is_write = *op == Op::kSet || *op == Op::kDelete || *op == Op::kBulkSet ||
                        *op == Op::kCas || *op == Op::kTxn;
  if (simple && session->coalesce_writes && (*op == Op::kSet || *op == Op::kDelete) &&
      impl_->Coalesce(*op, fast, id_prefix, done, counters, session)) {
    return;
  }
  // Anything else starts only after the writes gathered before it: a
  // connection's writes start in the order they arrive.
  FlushWrites(session);
  std::string simple_key, simple_value;
  if (simple) {
    simple_key.assign(fast.key);
    if (*op == Op::kSet) simple_value.assign(fast.value);
  }
  if (is_write) {
    // Let the queue move on before answering: once answered, the caller
    // may stop caring about the session.
    done = [this, session, done = std::move(done)](std::string response) {
      WriteFinished(session);
      done(std::move(response));
    };
  }
  auto reply = std::make_shared<Reply>(std::move(id_prefix), std::move(done), counters);
  auto run = [this, op = *op, req = std::move(req), simple, key = std::move(simple_key),
              value = std::move(simple_value), bulk = std::move(bulk), bulk_count, session,
              reply]() mutable {
    AnswerErrorsOf(reply, [&] {
      if (simple) {
        impl_->DispatchSimple(op, key, std::move(value), session.get(), reply);
      } else if (bulk) {
        impl_->BulkSetBatch(std::move(bulk), bulk_count, session.get(), reply);
      } else {
        impl_->Dispatch(op, req, session.get(), reply);
      }
    });
  };
  {
    std::lock_guard lock(session->mu);
    const bool now = session->blocked.empty() && (is_write || session->writes_pending == 0);
    if (!now) {
      session->blocked.push_back({is_write, std::move(run)});
      return;
    }
    if (is_write) ++session->writes_pending;
  }
  run();
}

bool RequestHandler::Impl::Coalesce(Op op, const FastRequest& fast, std::string& id_prefix,
                                     RequestHandler::Done& done, OpCounters* counters,
                                     const std::shared_ptr<Session>& session) {
  // What DispatchSimple would refuse or route elsewhere takes the usual path.
  if (options.replication != nullptr) return false;
  if (!options.auth_token.empty() && !session->authenticated) return false;
  KeyLocks::Held held;
  {
    std::lock_guard lock(session->mu);
    // The usual path's rule for a write: it starts now unless something of
    // its session is queued.
    if (!session->blocked.empty()) return false;
    // Blind writes lock shared, as WriteKey does; a stripe someone waits
    // for (a cas) sends this write the usual, queued way.
    if (!locks.TryAcquireOne(fast.key, KeyLocks::Mode::kShared, &held)) return false;
    ++session->writes_pending;
  }
  auto& c = session->coalesced;
  if (c != nullptr && !c->replies.empty() &&
      c->batch.ByteSize() + fast.key.size() + fast.value.size() > kMaxCoalescedBytes) {
    owner->FlushWrites(session);
  }
  if (c == nullptr) c = std::make_shared<Session::Coalesced>();
  if (op == Op::kSet) {
    c->batch.Put(fast.key, fast.value);
  } else {
    c->batch.Delete(fast.key);
  }
  c->stripes.push_back(held.stripes.front());
  c->replies.push_back(std::make_shared<Reply>(std::move(id_prefix), std::move(done), counters));
  return true;
}

void RequestHandler::FlushWrites(const std::shared_ptr<Session>& session) {
  if (session->coalesced == nullptr || session->coalesced->replies.empty()) return;
  std::shared_ptr<Session::Coalesced> c = std::move(session->coalesced);
  writes_in_flight_.fetch_add(1, std::memory_order_relaxed);
  impl_->db->WriteAsync(impl_->write_options(), std::move(c->batch), [this, session, c](Status s) {
    KeyLocks::Held held;
    held.mode = KeyLocks::Mode::kShared;
    held.stripes = std::move(c->stripes);
    impl_->locks.Release(held);  // visible now: let the next writer of these keys in
    // As for a single write: the session's queue moves on before the
    // answers, after which the caller may stop caring about the session.
    WriteFinished(session, c->replies.size());
    writes_in_flight_.fetch_sub(1, std::memory_order_relaxed);
    for (const ReplyPtr& reply : c->replies) {
      if (s.ok()) {
        reply->Ok("null");
      } else {
        reply->Error(s);
      }
    }
  });
}

void RequestHandler::WriteFinished(const std::shared_ptr<Session>& session, uint64_t n) {
  {
    std::lock_guard lock(session->mu);
    session->writes_pending -= n;
    if (session->writes_pending > 0 || session->blocked.empty() || session->draining) return;
    session->draining = true;
  }
  // Usually on a DB callback thread: start the waiting requests elsewhere.
  impl_->post([this, session] { Drain(session); });
}

void RequestHandler::Drain(const std::shared_ptr<Session>& session) {
  for (;;) {
    std::function<void()> run;
    bool is_write;
    {
      std::lock_guard lock(session->mu);
      if (session->blocked.empty() ||
          (!session->blocked.front().is_write && session->writes_pending > 0)) {
        session->draining = false;
        return;
      }
      is_write = session->blocked.front().is_write;
      run = std::move(session->blocked.front().run);
      // A write counts as pending from here on; a read stays at the front
      // while it runs, so a request arriving meanwhile queues behind it.
      if (is_write) {
        ++session->writes_pending;
        session->blocked.pop_front();
      }
    }
    run();
    if (!is_write) {
      std::lock_guard lock(session->mu);
      session->blocked.pop_front();
    }
  }
}

void RequestHandler::Impl::DispatchSimple(Op op, std::string_view key, std::string value,
                                          Session* session, const ReplyPtr& reply) {
  CheckAuth(op, session);
  if (options.replication != nullptr && op != Op::kPing) {
    return ReplicateSimple(op, key, std::move(value), reply);
  }
  switch (op) {
    case Op::kPing: return reply->Ok("\"pong\"");
    case Op::kGet: return GetKey(key, reply);
    case Op::kSet: return SetKey(key, std::move(value), reply);
    case Op::kDelete: return DeleteKey(key, reply);
    default: break;
  }
  Fail("internal", "op not dispatched");
}

void RequestHandler::Impl::Dispatch(Op op, const json& req, Session* session,
                                    const ReplyPtr& reply, bool replicated) {
  if (!replicated) {
    CheckAuth(op, session);
    if (options.replication != nullptr && Replicate(op, req, reply)) return;
  }
  if ((op == Op::kSet || op == Op::kDelete || op == Op::kBulkSet || op == Op::kCas || op == Op::kTxn) &&
      OptionalField(req, "request_id") != nullptr) {
    return RunCommand(op, req, reply);
  }
  switch (op) {
    case Op::kPing: return reply->Ok("\"pong\"");
    case Op::kAuth: return Auth(req, session, reply);
    case Op::kGet: return Get(req, reply);
    case Op::kSet: return Set(req, reply);
    case Op::kDelete: return Delete(req, reply);
    case Op::kBulkSet: return BulkSet(req, reply);
    case Op::kBulkGet: return BulkGet(req, reply);
    case Op::kScan: return Scan(req, reply);
    case Op::kCas: return Cas(req, reply);
    case Op::kTxn: return Txn(req, reply);
    case Op::kStats: return Stats(reply);
    case Op::kFlush:
    case Op::kCompact:
    case Op::kCheckpoint:
      return Admin(op, req, reply);
    case Op::kSearchByValue:
    case Op::kFulltextSearch:
    case Op::kSemanticSearch:
      return Search(op, req, reply);
    case Op::kTransferLeader:
      Fail("unavailable", "transfer_leader needs a cluster (kvserver --cluster)");
    case Op::kCount: break;
  }
  Fail("internal", "op not dispatched");
}

void RequestHandler::Impl::WithLocks(const std::vector<std::string_view>& keys,
                                     KeyLocks::Mode mode, const ReplyPtr& reply,
                                     std::function<void(GuardPtr)> body) {
  locks.Acquire(keys, mode, [this, reply, body = std::move(body)](KeyLocks::Held held,
                                                                   bool immediate) mutable {
    auto guard = std::make_shared<LockGuard>(&locks, std::move(held));
    auto run = [reply, guard = std::move(guard), body = std::move(body)]() mutable {
      // body owns the locks from here: it drops them before it answers,
      // since an answered caller may destroy this handler.
      AnswerErrorsOf(reply, [&] { body(std::move(guard)); });
    };
    // A late grant runs inside another request's DB callback; reading and
    // writing there would hold up that thread's other callbacks.
    if (immediate) {
      run();
    } else {
      post(std::move(run));
    }
  });
}

void RequestHandler::Impl::Commit(WriteBatch batch, GuardPtr guard, const ReplyPtr& reply,
                                  std::string result) {
  CommitAnswer(std::move(batch), std::move(guard), reply, ReplicaAnswer::Ok(std::move(result)));
}

void RequestHandler::Impl::CommitAnswer(WriteBatch batch, GuardPtr guard, const ReplyPtr& reply,
                                        ReplicaAnswer answer) {
  CheckBatchSize(batch);
  owner->writes_in_flight_.fetch_add(1, std::memory_order_relaxed);
  db->WriteAsync(write_options(), std::move(batch),
                 [this, guard = std::move(guard), reply, answer = std::move(answer)](
                     Status s) mutable {
                   guard.reset();  // the write is visible: let the next writer of these keys in
                   // Last touch of the handler: once answered, its owner may
                   // destroy it.
                   owner->writes_in_flight_.fetch_sub(1, std::memory_order_relaxed);
                   if (s.ok()) {
                     AnswerWith(reply, answer);
                   } else {
                     reply->Error(s);
                   }
                 });
}

void RequestHandler::Impl::Admin(Op op, const json& req, const ReplyPtr& reply) {
  std::string begin, end, dir;
  if (op == Op::kCompact) {
    if (OptionalField(req, "start") != nullptr) begin = std::string(StringField(req, "start"));
    if (OptionalField(req, "end") != nullptr) end = std::string(StringField(req, "end"));
  }
  if (op == Op::kCheckpoint) {
    if (options.checkpoint_dir.empty()) {
      Fail("unavailable", "checkpoints are off: start kvserver with --checkpoint-dir DIR");
    }
    const std::string_view name = StringField(req, "name");
    if (name.empty() || name.size() > 255 || name == "." || name == ".." ||
        name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
      Fail("bad_request", "\"name\" must be one path component (no '/'), made under the checkpoint directory");
    }
    dir = options.checkpoint_dir + "/" + std::string(name);
  }
  owner->writes_in_flight_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(admin_mu);
  std::erase_if(admin_threads, [](std::thread& t) { return !t.joinable(); });
  admin_threads.emplace_back([this, op, begin = std::move(begin), end = std::move(end), dir = std::move(dir), reply] {
    Status s = op == Op::kFlush     ? db->Flush()
               : op == Op::kCompact ? db->CompactRange(begin, end)
                                    : db->Checkpoint(dir);
    owner->writes_in_flight_.fetch_sub(1, std::memory_order_relaxed);
    if (!s.ok()) return reply->Error(s);
    reply->Ok(op == Op::kCheckpoint ? Dump(json{{"dir", dir}}) : std::string("null"));
  });
}

void RequestHandler::Impl::Auth(const json& req, Session* session, const ReplyPtr& reply) {
  std::string_view token = StringField(req, "token");
  if (options.auth_token.empty()) return reply->Ok("null");
  // Compare every byte so the time taken does not reveal the matching prefix.
  const std::string& want = options.auth_token;
  unsigned char diff = token.size() == want.size() ? 0 : 1;
  for (size_t i = 0; i < token.size(); ++i) {
    diff |= static_cast<unsigned char>(token[i] ^ want[i % want.size()]);
  }
  if (diff != 0) Fail("unauthorized", "wrong token");
  session->authenticated = true;
  reply->Ok("null");
}

void RequestHandler::Impl::Get(const json& req, const ReplyPtr& reply) {
  GetKey(KeyOf(Field(req, "key")), reply);
}

void RequestHandler::Impl::GetKey(std::string_view key, const ReplyPtr& reply) {
  std::optional<std::string> value = Read(key);
  // Answered, not thrown: a miss is a routine answer, and unwinding costs
  // more than the whole lookup.
  if (!value) return reply->Error("not_found", "key not found");
  reply->Ok(*value);
}

void RequestHandler::Impl::Set(const json& req, const ReplyPtr& reply) {
  std::string_view key = KeyOf(Field(req, "key"));
  if (const json* vector = OptionalField(req, "vector")) {
    std::string value = Canonical(Field(req, "value"));
    WriteBatch batch;
    batch.PutWithVector(key, value, PutVector(vector, VectorDimension()));
    return WriteKey(key, std::move(batch), reply);
  }
  SetKey(key, Canonical(Field(req, "value")), reply);
}

void RequestHandler::Impl::SetKey(std::string_view key, std::string value,
                                  const ReplyPtr& reply) {
  WriteBatch batch;
  batch.Put(key, value);
  WriteKey(key, std::move(batch), reply);
}

void RequestHandler::Impl::WriteKey(std::string_view key, WriteBatch batch,
                                    const ReplyPtr& reply) {
  // Usually the stripe is free: take it and commit here, without the
  // callbacks WithLocks needs for the case where it is not.
  KeyLocks::Held held;
  if (locks.TryAcquireOne(key, KeyLocks::Mode::kShared, &held)) {
    auto guard = std::make_shared<LockGuard>(&locks, std::move(held));
    return Commit(std::move(batch), std::move(guard), reply, "null");
  }
  WithLocks({key}, KeyLocks::Mode::kShared, reply,
            [this, reply, batch = std::move(batch)](GuardPtr guard) mutable {
              Commit(std::move(batch), std::move(guard), reply, "null");
            });
}

void RequestHandler::Impl::Delete(const json& req, const ReplyPtr& reply) {
  DeleteKey(KeyOf(Field(req, "key")), reply);
}

void RequestHandler::Impl::DeleteKey(std::string_view key, const ReplyPtr& reply) {
  WriteBatch batch;
  batch.Delete(key);
  WriteKey(key, std::move(batch), reply);
}

void RequestHandler::Impl::BulkSet(const json& req, const ReplyPtr& reply) {
  const json& items = ArrayField(req, "items", options.max_batch_ops);
  WriteBatch batch;
  std::vector<std::string_view> keys;
  keys.reserve(items.size());
  for (const json& item : items) {
    // Either [key, value(, vector)] or {"key": key, "value": value(, "vector": vector)}.
    const json* vector = nullptr;
    std::string value;
    if (item.is_array() && (item.size() == 2 || item.size() == 3)) {
      keys.push_back(KeyOf(item[0], "an item's key"));
      value = Canonical(item[1]);
      if (item.size() == 3) vector = &item[2];
    } else if (item.is_object()) {
      keys.push_back(KeyOf(Field(item, "key"), "an item's key"));
      value = Canonical(Field(item, "value"));
      vector = OptionalField(item, "vector");
    } else {
      Fail("bad_request", kBulkItemShape);
    }
    if (vector != nullptr) {
      batch.PutWithVector(keys.back(), value, PutVector(vector, VectorDimension()));
    } else {
      batch.Put(keys.back(), value);
    }
  }
  CheckBatchSize(batch);
  std::string result = "{\"count\":" + std::to_string(items.size()) + "}";
  WithLocks(keys, KeyLocks::Mode::kShared, reply,
            [this, reply, batch = std::move(batch), result = std::move(result)](
                GuardPtr guard) mutable {
              Commit(std::move(batch), std::move(guard), reply, std::move(result));
            });
}

void RequestHandler::Impl::BulkSetBatch(std::shared_ptr<WriteBatch> batch, size_t count,
                                        Session* session, const ReplyPtr& reply) {
  CheckAuth(Op::kBulkSet, session);
  CheckBatchSize(*batch);
  // The keys as views into the batch, which stays where it is (behind the
  // pointer) until the commit; Acquire hashes them before it returns.
  struct Keys : WriteBatch::Handler {
    std::vector<std::string_view> keys;
    void Put(std::string_view key, std::string_view) override { keys.push_back(key); }
    void Delete(std::string_view key) override { keys.push_back(key); }
  } keys;
  keys.keys.reserve(count);
  Status s = batch->Iterate(&keys);
  if (!s.ok()) return reply->Error(s);
  std::string result = "{\"count\":" + std::to_string(count) + "}";
  WithLocks(keys.keys, KeyLocks::Mode::kShared, reply,
            [this, reply, batch, result = std::move(result)](GuardPtr guard) mutable {
              Commit(std::move(*batch), std::move(guard), reply, std::move(result));
            });
}

void RequestHandler::Impl::BulkGet(const json& req, const ReplyPtr& reply) {
  const json& keys = ArrayField(req, "keys", options.max_batch_ops);
  std::vector<std::string_view> ks;
  ks.reserve(keys.size());
  for (const json& k : keys) ks.push_back(KeyOf(k, "each of \"keys\""));
  // One snapshot, so the values are from one moment.
  const Snapshot* snap = db->GetSnapshot();
  ReadOptions ro;
  ro.snapshot = snap;
  std::string out = "{";
  Status failed;
  std::string value;
  for (std::string_view k : ks) {
    Status s = db->Get(ro, k, &value);
    if (s.IsNotFound()) continue;
    if (!s.ok()) {
      failed = s;
      break;
    }
    if (out.size() > 1) out += ',';
    out += QuoteKey(k);
    out += ':';
    out += value;
  }
  db->ReleaseSnapshot(snap);
  if (!failed.ok()) return reply->Error(failed);
  out += '}';
  reply->Ok(out);
}

void RequestHandler::Impl::Scan(const json& req, const ReplyPtr& reply) {
  std::string start, end, prefix;
  bool has_end = false;
  if (const json* p = OptionalField(req, "prefix")) {
    if (OptionalField(req, "start") || OptionalField(req, "end")) {
      Fail("bad_request", "give \"prefix\" or \"start\"/\"end\", not both");
    }
    prefix = KeyOf(*p, "\"prefix\"");
    start = prefix;
  } else {
    if (const json* s = OptionalField(req, "start")) start = KeyOf(*s, "\"start\"");
    if (const json* e = OptionalField(req, "end")) {
      end = KeyOf(*e, "\"end\"");
      has_end = true;
    }
  }
  size_t limit = 1000;
  if (const json* l = OptionalField(req, "limit")) {
    if (!l->is_number_unsigned() || l->get<uint64_t>() == 0) {
      Fail("bad_request", "\"limit\" must be a positive integer");
    }
    if (l->get<uint64_t>() > options.max_scan_limit) {
      Fail("too_large", "\"limit\" is over " + std::to_string(options.max_scan_limit));
    }
    limit = l->get<size_t>();
  }
  std::unique_ptr<Iterator> it = db->NewIterator(ReadOptions{});
  std::string out = "{\"items\":[";
  size_t n = 0;
  bool more = false;
  for (it->Seek(start); it->Valid(); it->Next()) {
    std::string_view k = it->key();
    // Keys from 0xff on are the server's own (the cluster's applied index):
    // no client key starts with that byte, which never occurs in UTF-8.
    if (!k.empty() && static_cast<unsigned char>(k[0]) == 0xff) break;
    if (!prefix.empty() && !k.starts_with(prefix)) break;
    if (has_end && k >= end) break;
    // A response stops at limit entries or, past the first entry, at about
    // max_scan_bytes, whichever comes first: the client pages on with more.
    if (n == limit || (n > 0 && out.size() >= options.max_scan_bytes)) {
      more = true;
      break;
    }
    if (n++ > 0) out += ',';
    out += "{\"key\":";
    out += QuoteKey(k);
    out += ",\"value\":";
    out += it->value();
    out += '}';
  }
  Status s = it->status();
  if (!s.ok()) return reply->Error(s);
  out += "],\"more\":";
  out += more ? "true}" : "false}";
  reply->Ok(out);
}

// The three searches. Hits come back best first (search_by_value: in key
// order) as {"key", "score", "value"?}; search_by_value answers a plain list
// of keys unless values are asked for, as the earlier Python store did.
void RequestHandler::Impl::Search(Op op, const json& req, const ReplyPtr& reply) {
  auto count_field = [&](const char* name, size_t fallback) -> size_t {
    const json* f = OptionalField(req, name);
    if (f == nullptr) return fallback;
    if (!f->is_number_unsigned() || f->get<uint64_t>() == 0) {
      Fail("bad_request", std::string("\"") + name + "\" must be a positive integer");
    }
    if (f->get<uint64_t>() > options.max_scan_limit) {
      Fail("too_large", std::string("\"") + name + "\" is over " + std::to_string(options.max_scan_limit));
    }
    return f->get<size_t>();
  };
  bool with_values = false;
  if (const json* w = OptionalField(req, "with_values")) {
    if (!w->is_boolean()) Fail("bad_request", "\"with_values\" must be a boolean");
    with_values = w->get<bool>();
  }
  std::vector<SearchHit> hits;
  Status s;
  if (op == Op::kSearchByValue) {
    ValueSearchOptions o;
    o.limit = count_field("limit", 1000);
    o.include_values = with_values;
    s = db->SearchByValue(Canonical(Field(req, "value")), o, &hits);
  } else if (op == Op::kFulltextSearch) {
    FullTextOptions o;
    o.limit = count_field("limit", 10);
    o.include_values = with_values;
    if (const json* m = OptionalField(req, "mode")) {
      if (!m->is_string() || (*m != "all" && *m != "any")) {
        Fail("bad_request", "\"mode\" must be \"all\" or \"any\"");
      }
      o.mode = *m == "all" ? MatchMode::kAllTerms : MatchMode::kAnyTerm;
    }
    s = db->FullTextSearch(StringField(req, "query"), o, &hits);
  } else {
    SemanticOptions o;
    o.k = count_field("k", 10);
    o.include_values = with_values;
    o.threshold = 0.5;  // the earlier store's default
    if (const json* t = OptionalField(req, "threshold")) {
      if (!t->is_number()) Fail("bad_request", "\"threshold\" must be a number");
      o.threshold = t->get<double>();
    }
    const json* vector = OptionalField(req, "vector");
    const json* query = OptionalField(req, "query");
    if ((vector == nullptr) == (query == nullptr)) {
      Fail("bad_request", "give \"query\" (text) or \"vector\" (numbers), one of them");
    }
    if (vector != nullptr) {
      if (!vector->is_array() || vector->empty() || vector->size() > 65536) {
        Fail("bad_request", "\"vector\" must be a non-empty array of at most 65536 numbers");
      }
      std::vector<float> v;
      v.reserve(vector->size());
      for (const json& x : *vector) {
        if (!x.is_number()) Fail("bad_request", "\"vector\" must hold numbers only");
        v.push_back(x.get<float>());
      }
      s = db->SemanticSearchByVector(v, o, &hits);
    } else {
      if (!query->is_string()) Fail("bad_request", "\"query\" must be a string");
      s = db->SemanticSearch(query->get_ref<const std::string&>(), o, &hits);
    }
  }
  if (!s.ok()) return reply->Error(s);
  // Keys from 0xff on are the server's own (the cluster's applied index).
  std::erase_if(hits, [](const SearchHit& h) { return !h.key.empty() && static_cast<unsigned char>(h.key[0]) == 0xff; });
  std::string out = "[";
  for (size_t i = 0; i < hits.size(); i++) {
    if (i > 0) out += ',';
    if (op == Op::kSearchByValue && !with_values) {
      out += QuoteKey(hits[i].key);
      continue;
    }
    out += "{\"key\":";
    out += QuoteKey(hits[i].key);
    if (op != Op::kSearchByValue) {
      char score[32];
      std::snprintf(score, sizeof(score), "%.6g", hits[i].score);
      out += ",\"score\":";
      out += score;
    }
    if (hits[i].value) {
      out += ",\"value\":";
      out += *hits[i].value;
    }
    out += '}';
  }
  out += ']';
  reply->Ok(out);
}

void RequestHandler::Impl::Cas(const json& req, const ReplyPtr& reply) {
  std::string_view key = KeyOf(Field(req, "key"));
  std::string value = Canonical(Field(req, "value"));
  const json* expected = OptionalField(req, "expected");
  const json* absent = OptionalField(req, "expect_absent");
  if (absent != nullptr && !absent->is_boolean()) {
    Fail("bad_request", "\"expect_absent\" must be a boolean");
  }
  const bool want_absent = absent != nullptr && absent->get<bool>();
  if ((expected != nullptr) == want_absent) {
    Fail("bad_request", "give exactly one of \"expected\" and \"expect_absent\":true");
  }
  std::optional<std::string> want;
  if (expected != nullptr) want = Canonical(*expected);
  WithLocks({key}, KeyLocks::Mode::kExclusive, reply,
            [this, reply, key = std::string(key), value = std::move(value),
             want = std::move(want)](GuardPtr guard) mutable {
              std::optional<std::string> current = Read(key);
              if (current != want) {
                guard.reset();
                json extra = json::object();
                if (current) {
                  json cur = json::parse(*current, nullptr, false);
                  if (!cur.is_discarded()) extra["current"] = std::move(cur);
                }
                reply->Error("conflict",
                             current ? "the current value differs" : "the key is absent",
                             &extra);
                return;
              }
              WriteBatch batch;
              batch.Put(key, value);
              Commit(std::move(batch), std::move(guard), reply, "null");
            });
}

// Declared here, defined with the cluster hooks below: a txn is parsed and
// evaluated the same way whether it runs here or through the Raft log.
namespace {
WriteCommand ParseWriteCommand(Op op, const json& req, size_t max_batch_ops, size_t vector_dimension);
void AnswerWith(const ReplyPtr& reply, const ReplicaAnswer& a);
}  // namespace

void RequestHandler::Impl::Txn(const json& req, const ReplyPtr& reply) { RunCommand(Op::kTxn, req, reply); }

void RequestHandler::Impl::RunCommand(Op op, const json& req, const ReplyPtr& reply) {
  // Validated whole before locking, so a bad op never half-runs. Held by a
  // shared_ptr, so the keys the locks are taken on stay where they are.
  auto cmd = std::make_shared<const WriteCommand>(
      ParseWriteCommand(op, req, options.max_batch_ops, VectorDimension()));
  std::vector<std::string_view> keys;
  // A named write also takes this one lock: the ring of remembered ids is
  // shared by all of them.
  static const std::string kRequestsLock = "\xff\xffkvstore/reqcount";
  if (!cmd->request_id.empty()) keys.push_back(kRequestsLock);
  for (const auto& c : cmd->compares) keys.push_back(c.key);
  for (const auto* ops : {&cmd->success, &cmd->failure}) {
    for (const auto& o : *ops) keys.push_back(o.key);
  }
  // Every key lock is taken before the compares are read, and held until the
  // chosen branch is durable.
  WithLocks(keys, KeyLocks::Mode::kExclusive, reply, [this, reply, cmd](GuardPtr guard) mutable {
    CommandReader read = StoreReader();
    CommandOverlay overlay;  // later ops see earlier ones of the same command, as in etcd
    WriteBatch batch;
    ReplicaAnswer answer = EvaluateOnce(*cmd, read, &overlay, &batch);
    // An answer may be an error that still writes: a named cas's conflict,
    // remembered for its resends.
    if (batch.Count() == 0) {
      guard.reset();
      return AnswerWith(reply, answer);
    }
    CommitAnswer(std::move(batch), std::move(guard), reply, std::move(answer));
  });
}

namespace {
json LevelsJson(const DBStats& s) {
  json levels = json::array();
  for (const LevelStats& l : s.levels) levels.push_back({{"files", l.files}, {"bytes", l.bytes}});
  return levels;
}
}  // namespace

void RequestHandler::Impl::Stats(const ReplyPtr& reply) {
  DBStats s = db->GetStats();
  json ops_json = json::object();
  for (const OpEntry& e : kOps) {
    const OpCounters& c = ops[static_cast<size_t>(e.op)];
    ops_json[e.name] = {{"count", c.count.load()}, {"errors", c.errors.load()}};
  }
  json r = {
      {"keys", s.live_keys_estimate},
      {"wal_size", s.wal_bytes},
      {"sequence", s.sequence},
      {"memtable_bytes", s.memtable_bytes},
      {"immutable_memtables", s.immutable_memtables},
      {"wal_bytes", s.wal_bytes},
      {"wal_segments", s.wal_segments},
      {"live_keys_estimate", s.live_keys_estimate},
      {"writes", s.writes},
      {"write_groups", s.write_groups},
      {"wal_syncs", s.wal_syncs},
      {"snapshots", s.snapshots},
      {"read_only", s.read_only},
      {"read_only_reason", s.read_only_reason},
      {"levels", LevelsJson(s)},
      {"flushes", s.flushes},
      {"compactions", s.compactions},
      {"write_amplification", s.write_amplification},
      {"stall_count", s.stall_count},
      {"stall_micros", s.stall_micros},
      {"block_cache_hits", s.block_cache_hits},
      {"block_cache_misses", s.block_cache_misses},
      {"background_error", s.background_error},
      {"search_enabled", s.search_enabled},
      {"index_vector_dimension", s.index_vector_dimension},
      {"index_segments", s.index_segments},
      {"index_segment_bytes", s.index_segment_bytes},
      {"index_embedding_backlog", s.index_embedding_backlog},
      {"index_docs_embedded", s.index_docs_embedded},
      {"index_embedding_errors", s.index_embedding_errors},
      {"index_embedding_last_error", s.index_embedding_last_error},
      {"index_vector_rewrites", s.index_vector_rewrites},
      {"connections", owner->connections.load()},
      {"connections_total", owner->connections_total.load()},
      {"connections_rejected", owner->connections_rejected.load()},
      {"writes_in_flight", owner->writes_in_flight_.load()},
      {"lock_waiters", locks.waiting()},
      {"bad_requests", bad_requests.count.load()},
      {"ops", std::move(ops_json)},
  };
  if (options.replication != nullptr) {
    json cluster = json::parse(options.replication->StatsJson(), nullptr, false);
    if (!cluster.is_discarded()) r["cluster"] = std::move(cluster);
  }
  reply->Ok(Dump(r));
}

}  // namespace kvstore::net

namespace kvstore::net {

std::string RequestHandler::PrometheusText() {
  Impl& im = *impl_;
  DBStats s = im.db->GetStats();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           name + " " + Dump(json(value)) + "\n";
  };
  metric("kvstore_keys", "gauge", "Live keys (estimate).", static_cast<double>(s.live_keys_estimate));
  metric("kvstore_sequence", "gauge", "Sequence number of the newest write.", static_cast<double>(s.sequence));
  metric("kvstore_memtable_bytes", "gauge", "Bytes in memtables.", static_cast<double>(s.memtable_bytes));
  metric("kvstore_immutable_memtables", "gauge", "Memtables waiting for a flush.", static_cast<double>(s.immutable_memtables));
  metric("kvstore_wal_bytes", "gauge", "Bytes in live WAL segments.", static_cast<double>(s.wal_bytes));
  metric("kvstore_wal_segments", "gauge", "Live WAL segments.", static_cast<double>(s.wal_segments));
  metric("kvstore_wal_syncs_total", "counter", "fdatasync calls on the WAL.", static_cast<double>(s.wal_syncs));
  metric("kvstore_wal_groups_total", "counter", "WAL appends (one per commit group).", static_cast<double>(s.write_groups));
  metric("kvstore_writes_total", "counter", "Write batches committed.", static_cast<double>(s.writes));
  metric("kvstore_wal_group_size_avg", "gauge", "Batches per WAL group since start.",
         s.write_groups == 0 ? 0.0 : static_cast<double>(s.writes) / static_cast<double>(s.write_groups));
  metric("kvstore_snapshots", "gauge", "Snapshots held.", static_cast<double>(s.snapshots));
  metric("kvstore_read_only", "gauge", "1 when the store refuses writes.", s.read_only ? 1 : 0);
  metric("kvstore_connections", "gauge", "Open client connections.", static_cast<double>(connections.load()));
  metric("kvstore_connections_total", "counter", "Connections accepted.", static_cast<double>(connections_total.load()));
  metric("kvstore_connections_rejected_total", "counter", "Connections refused at the limit.",
         static_cast<double>(connections_rejected.load()));
  metric("kvstore_writes_in_flight", "gauge", "Writes waiting for their WAL commit.", static_cast<double>(writes_in_flight_.load()));
  metric("kvstore_key_lock_waiters", "gauge", "Requests queued for key locks.", static_cast<double>(im.locks.waiting()));
  metric("kvstore_bad_requests_total", "counter", "Lines rejected before an op was known.",
         static_cast<double>(im.bad_requests.count.load()));
  metric("kvstore_flushes_total", "counter", "Memtables flushed to tables since start.", static_cast<double>(s.flushes));
  metric("kvstore_compactions_total", "counter", "Compactions since start.", static_cast<double>(s.compactions));
  metric("kvstore_flush_bytes_total", "counter", "Bytes of tables written by flushes.",
         static_cast<double>(s.flush_bytes_written));
  metric("kvstore_compaction_read_bytes_total", "counter", "Bytes of tables read by compactions.",
         static_cast<double>(s.compaction_bytes_read));
  metric("kvstore_compaction_write_bytes_total", "counter", "Bytes of tables written by compactions.",
         static_cast<double>(s.compaction_bytes_written));
  metric("kvstore_index_embedding_backlog", "gauge", "Docs waiting for their vectors (HTTP embedder).",
         static_cast<double>(s.index_embedding_backlog));
  metric("kvstore_index_embedding_errors_total", "counter", "Failed attempts of the background embedder.",
         static_cast<double>(s.index_embedding_errors));
  metric("kvstore_write_amplification", "gauge", "Table bytes written per user byte written.", s.write_amplification);
  metric("kvstore_write_stalls_total", "counter", "Writes slowed down or stopped by backpressure.",
         static_cast<double>(s.stall_count));
  metric("kvstore_write_stall_seconds_total", "counter", "Time writes spent stalled.",
         static_cast<double>(s.stall_micros) / 1e6);
  metric("kvstore_block_cache_hits_total", "counter", "Table blocks found in the block cache.",
         static_cast<double>(s.block_cache_hits));
  metric("kvstore_block_cache_misses_total", "counter", "Table blocks read from files.",
         static_cast<double>(s.block_cache_misses));
  metric("kvstore_background_error", "gauge", "1 while the last flush or compaction failed.",
         s.background_error.empty() ? 0 : 1);
  out += "# HELP kvstore_level_files Tables per level.\n# TYPE kvstore_level_files gauge\n";
  for (size_t level = 0; level < s.levels.size(); level++) {
    out += "kvstore_level_files{level=\"" + std::to_string(level) + "\"} " + std::to_string(s.levels[level].files) + "\n";
  }
  out += "# HELP kvstore_level_bytes Table bytes per level.\n# TYPE kvstore_level_bytes gauge\n";
  for (size_t level = 0; level < s.levels.size(); level++) {
    out += "kvstore_level_bytes{level=\"" + std::to_string(level) + "\"} " + std::to_string(s.levels[level].bytes) + "\n";
  }

  out += "# HELP kvstore_requests_total Requests by op.\n# TYPE kvstore_requests_total counter\n";
  for (const OpEntry& e : kOps) {
    out += std::string("kvstore_requests_total{op=\"") + e.name + "\"} " +
           std::to_string(im.ops[static_cast<size_t>(e.op)].count.load()) + "\n";
  }
  out += "# HELP kvstore_request_errors_total Error responses by op.\n# TYPE kvstore_request_errors_total counter\n";
  for (const OpEntry& e : kOps) {
    out += std::string("kvstore_request_errors_total{op=\"") + e.name + "\"} " +
           std::to_string(im.ops[static_cast<size_t>(e.op)].errors.load()) + "\n";
  }
  out += "# HELP kvstore_request_duration_seconds From a request's parse to its response.\n"
         "# TYPE kvstore_request_duration_seconds histogram\n";
  for (const OpEntry& e : kOps) {
    const OpCounters& c = im.ops[static_cast<size_t>(e.op)];
    const std::string label = std::string("{op=\"") + e.name + "\"";
    uint64_t cumulative = 0;
    for (size_t b = 0; b < kLatencyBuckets; ++b) {
      cumulative += c.latency[b].load();
      std::string le = b < std::size(kLatencyBounds) ? Dump(json(kLatencyBounds[b])) : "+Inf";
      out += "kvstore_request_duration_seconds_bucket" + label + ",le=\"" + le + "\"} " +
             std::to_string(cumulative) + "\n";
    }
    out += "kvstore_request_duration_seconds_sum" + label + "} " +
           Dump(json(static_cast<double>(c.latency_ns.load()) / 1e9)) + "\n";
    out += "kvstore_request_duration_seconds_count" + label + "} " + std::to_string(cumulative) + "\n";
  }
  if (im.options.replication != nullptr) out += im.options.replication->PrometheusText();
  return out;
}

bool RequestHandler::Healthy(std::string* why) {
  DBStats s = impl_->db->GetStats();
  if (s.read_only) {
    *why = "read_only: " + s.read_only_reason;
    return false;
  }
  if (impl_->options.replication != nullptr) return impl_->options.replication->Healthy(why);
  return true;
}

}  // namespace kvstore::net

// Cluster mode: writes become WriteCommands proposed through the replicated
// log and applied by the cluster on every node (so cas and txn are decided
// there, in log order, and need no key locks here); reads wait for a read
// barrier unless they ask for "stale":true; everything else stays local.
namespace kvstore::net {

namespace {

void AnswerWith(const ReplyPtr& reply, const ReplicaAnswer& a) {
  if (a.ok()) return reply->Ok(a.result);
  json extra = a.error_extra.empty() ? json::object() : json::parse(a.error_extra, nullptr, false);
  if (!extra.is_object()) extra = json::object();
  reply->Error(a.error_code, a.error_message, &extra);
}

bool IsRead(Op op) {
  return op == Op::kGet || op == Op::kBulkGet || op == Op::kScan || op == Op::kSearchByValue ||
         op == Op::kFulltextSearch || op == Op::kSemanticSearch;
}

// The request's write as a WriteCommand, validated as the local ops
// validate it (same error codes and messages).
WriteCommand ParseWriteCommand(Op op, const json& req, size_t max_batch_ops, size_t vector_dimension) {
  using C = WriteCommand::Compare;
  using O = WriteCommand::Op;
  WriteCommand cmd;
  auto parse_ops = [&](const char* name) {
    std::vector<O> out;
    const json* list = OptionalField(req, name);
    if (list == nullptr) return out;
    if (!list->is_array()) Fail("bad_request", std::string("\"") + name + "\" must be an array");
    for (const json& o : *list) {
      if (!o.is_object()) Fail("bad_request", "each txn op must be an object");
      std::string_view kind = StringField(o, "op");
      O t{O::kGet, std::string(KeyOf(Field(o, "key"), "a txn op's key")), {}};
      if (kind == "set") {
        t.kind = O::kSet;
        t.value = Canonical(Field(o, "value"));
      } else if (kind == "delete") {
        t.kind = O::kDelete;
      } else if (kind != "get") {
        Fail("bad_request", "a txn op must be get, set or delete, not \"" + std::string(kind.substr(0, 64)) + "\"");
      }
      out.push_back(std::move(t));
    }
    return out;
  };
  size_t bytes = 0;
  switch (op) {
    case Op::kSet: {
      cmd.kind = WriteCommand::Kind::kSet;
      std::string key(KeyOf(Field(req, "key")));
      cmd.success.push_back({O::kSet, std::move(key), Canonical(Field(req, "value")),
                             PutVector(OptionalField(req, "vector"), vector_dimension)});
      break;
    }
    case Op::kDelete:
      cmd.kind = WriteCommand::Kind::kDelete;
      cmd.success.push_back({O::kDelete, std::string(KeyOf(Field(req, "key"))), {}});
      break;
    case Op::kBulkSet:
      cmd.kind = WriteCommand::Kind::kBulkSet;
      for (const json& item : ArrayField(req, "items", max_batch_ops)) {
        if (item.is_array() && (item.size() == 2 || item.size() == 3)) {
          std::string key(KeyOf(item[0], "an item's key"));
          cmd.success.push_back({O::kSet, std::move(key), Canonical(item[1]),
                                 PutVector(item.size() == 3 ? &item[2] : nullptr, vector_dimension)});
        } else if (item.is_object()) {
          std::string key(KeyOf(Field(item, "key"), "an item's key"));
          cmd.success.push_back({O::kSet, std::move(key), Canonical(Field(item, "value")),
                                 PutVector(OptionalField(item, "vector"), vector_dimension)});
        } else {
          Fail("bad_request", kBulkItemShape);
        }
      }
      break;
    case Op::kCas: {
      cmd.kind = WriteCommand::Kind::kCas;
      std::string key(KeyOf(Field(req, "key")));
      std::string value = Canonical(Field(req, "value"));
      const json* expected = OptionalField(req, "expected");
      const json* absent = OptionalField(req, "expect_absent");
      if (absent != nullptr && !absent->is_boolean()) {
        Fail("bad_request", "\"expect_absent\" must be a boolean");
      }
      const bool want_absent = absent != nullptr && absent->get<bool>();
      if ((expected != nullptr) == want_absent) {
        Fail("bad_request", "give exactly one of \"expected\" and \"expect_absent\":true");
      }
      if (want_absent) {
        cmd.compares.push_back({C::kMissing, key, {}});
      } else {
        cmd.compares.push_back({C::kEq, key, Canonical(*expected)});
      }
      cmd.success.push_back({O::kSet, key, std::move(value)});
      cmd.failure.push_back({O::kGet, std::move(key), {}});
      break;
    }
    case Op::kTxn: {
      cmd.kind = WriteCommand::Kind::kTxn;
      for (const json& c : ArrayField(req, "compare", max_batch_ops)) {
        if (!c.is_object()) Fail("bad_request", "each compare must be an object");
        C cmp{C::kEq, std::string(KeyOf(Field(c, "key"), "a compare's key")), {}};
        if (const json* e = OptionalField(c, "exists")) {
          if (!e->is_boolean()) Fail("bad_request", "a compare's \"exists\" must be a boolean");
          cmp.kind = e->get<bool>() ? C::kExists : C::kMissing;
        } else {
          cmp.value = Canonical(Field(c, "value"));
          if (const json* o = OptionalField(c, "op")) {
            if (*o == "ne") {
              cmp.kind = C::kNe;
            } else if (*o != "eq") {
              Fail("bad_request", "a compare's \"op\" must be \"eq\" or \"ne\"");
            }
          }
        }
        cmd.compares.push_back(std::move(cmp));
      }
      cmd.success = parse_ops("success");
      cmd.failure = parse_ops("failure");
      if (cmd.compares.size() + cmd.success.size() + cmd.failure.size() > max_batch_ops) {
        Fail("too_large", "txn has more than " + std::to_string(max_batch_ops) + " entries");
      }
      break;
    }
    default:
      Fail("internal", "not a write");
  }
  for (const O& o : cmd.success) bytes += o.key.size() + o.value.size() + 16;
  if (bytes > kMaxBatchSize) {
    Fail("too_large", "batch is about " + std::to_string(bytes) + " bytes; the limit is " +
                          std::to_string(kMaxBatchSize));
  }
  if (const json* id = OptionalField(req, "request_id")) {
    if (!id->is_string() || id->get_ref<const std::string&>().empty() ||
        id->get_ref<const std::string&>().size() > kMaxRequestIdBytes) {
      Fail("bad_request", "\"request_id\" must be a string of 1 to " + std::to_string(kMaxRequestIdBytes) + " bytes");
    }
    cmd.request_id = id->get<std::string>();
  }
  return cmd;
}

}  // namespace

bool RequestHandler::Impl::Replicate(Op op, const json& req, const ReplyPtr& reply) {
  switch (op) {
    case Op::kSet:
    case Op::kDelete:
    case Op::kBulkSet:
    case Op::kCas:
    case Op::kTxn:
      Propose(ParseWriteCommand(op, req, options.max_batch_ops, VectorDimension()), reply);
      return true;
    case Op::kTransferLeader: {
      uint64_t to = 0;
      if (const json* t = OptionalField(req, "to")) {
        if (!t->is_number_unsigned()) Fail("bad_request", "\"to\" must be a node id");
        to = t->get<uint64_t>();
      }
      options.replication->TransferLeadership(to, [reply](ReplicaAnswer a) { AnswerWith(reply, a); });
      return true;
    }
    default:
      break;
  }
  if (!IsRead(op)) return false;
  if (const json* stale = OptionalField(req, "stale")) {
    if (!stale->is_boolean()) Fail("bad_request", "\"stale\" must be a boolean");
    if (stale->get<bool>()) return false;  // this node's own state, maybe behind
  }
  auto copy = std::make_shared<json>(req);
  AfterBarrier(reply, [this, op, copy, reply] { Dispatch(op, *copy, nullptr, reply, true); });
  return true;
}

void RequestHandler::Impl::ReplicateSimple(Op op, std::string_view key, std::string value,
                                           const ReplyPtr& reply) {
  using O = WriteCommand::Op;
  WriteCommand cmd;
  switch (op) {
    case Op::kGet:
      return AfterBarrier(reply, [this, key = std::string(key), reply] { GetKey(key, reply); });
    case Op::kSet:
      cmd.kind = WriteCommand::Kind::kSet;
      cmd.success.push_back({O::kSet, std::string(key), std::move(value)});
      return Propose(cmd, reply);
    case Op::kDelete:
      cmd.kind = WriteCommand::Kind::kDelete;
      cmd.success.push_back({O::kDelete, std::string(key), {}});
      return Propose(cmd, reply);
    default:
      break;
  }
  Fail("internal", "op not dispatched");
}

void RequestHandler::Impl::Propose(const WriteCommand& command, const ReplyPtr& reply) {
  owner->writes_in_flight_.fetch_add(1, std::memory_order_relaxed);
  options.replication->Propose(EncodeWriteCommand(command), [this, reply](ReplicaAnswer a) {
    // Last touch of the handler: once answered, its owner may destroy it.
    owner->writes_in_flight_.fetch_sub(1, std::memory_order_relaxed);
    AnswerWith(reply, a);
  });
}

void RequestHandler::Impl::AfterBarrier(const ReplyPtr& reply, std::function<void()> read) {
  // Counted as a write so that the server keeps the DB open until it ran.
  owner->writes_in_flight_.fetch_add(1, std::memory_order_relaxed);
  options.replication->ReadBarrier([this, reply, read = std::move(read)](ReplicaAnswer a) mutable {
    if (!a.ok()) {
      owner->writes_in_flight_.fetch_sub(1, std::memory_order_relaxed);
      return AnswerWith(reply, a);
    }
    // The barrier answers on the consensus thread: read elsewhere.
    post([this, reply, read = std::move(read)] {
      AnswerErrorsOf(reply, read);
      owner->writes_in_flight_.fetch_sub(1, std::memory_order_relaxed);
    });
  });
}

}  // namespace kvstore::net
