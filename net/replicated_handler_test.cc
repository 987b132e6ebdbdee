// The handler in cluster mode (HandlerOptions::replication) against a fake
// replication that applies each WriteCommand to its own DB at once: writes
// and reads must answer exactly as a standalone handler does, a "follower"
// must answer not_leader unless asked for a stale read, and the WriteCommand
// encoding must round-trip.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>

#include <nlohmann/json.hpp>

#include "kvstore/embedder.h"
#include "net/handler.h"
#include "net/replication.h"
#include "net/write_command.h"

namespace kvstore::net {
namespace {

using json = nlohmann::json;

class FakeReplication : public Replication {
 public:
  explicit FakeReplication(DB* db) : db_(db) {}
  bool leader = true;

  void Propose(std::string command, Answer done) override {
    if (!leader) return done(NotLeader());
    std::lock_guard lock(mu_);
    WriteCommand cmd;
    if (!DecodeWriteCommand(command, &cmd)) return done(ReplicaAnswer::Error("internal", "undecodable"));
    CommandOverlay overlay;
    WriteBatch batch;
    ReplicaAnswer a = EvaluateOnce(
        cmd,
        [this](std::string_view key, std::optional<std::string>* v) {
          std::string s;
          Status st = db_->Get(ReadOptions{}, key, &s);
          if (st.ok()) *v = std::move(s);
          return st.IsNotFound() ? Status::OK() : st;
        },
        &overlay, &batch);
    // As the cluster does: the applied index rides in the same batch.
    batch.Put("\xff\xffkvstore/raft_applied", std::to_string(++applied_));
    Status s = db_->Write(WriteOptions{}, &batch);
    done(s.ok() ? a : ReplicaAnswer::Error("internal", s.ToString()));
  }
  void ReadBarrier(Answer done) override { done(leader ? ReplicaAnswer::Ok("null") : NotLeader()); }
  void TransferLeadership(uint64_t, Answer done) override { done(ReplicaAnswer::Ok(R"({"leader_id":2})")); }
  std::string StatsJson() override { return R"({"role":"leader"})"; }
  std::string PrometheusText() override { return "kvstore_raft_is_leader 1\n"; }
  bool Healthy(std::string*) override { return true; }

 private:
  static ReplicaAnswer NotLeader() {
    return ReplicaAnswer::Error("not_leader", "this node is not the leader", R"({"leader":"10.0.0.2:9000"})");
  }
  DB* db_;
  std::mutex mu_;
  uint64_t applied_ = 0;
};

class ReplicatedHandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = std::filesystem::path(::testing::TempDir()) /
            ("replicated_handler_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(base_);
    std::filesystem::create_directories(base_);
    ASSERT_TRUE(DB::Open(Options{}, (base_ / "local").string(), &local_db_).ok());
    ASSERT_TRUE(DB::Open(Options{}, (base_ / "replicated").string(), &repl_db_).ok());
    replication_ = std::make_unique<FakeReplication>(repl_db_.get());
    auto inline_post = [](std::function<void()> fn) { fn(); };
    local_ = std::make_unique<RequestHandler>(local_db_.get(), HandlerOptions{}, inline_post);
    HandlerOptions o;
    o.replication = replication_.get();
    replicated_ = std::make_unique<RequestHandler>(repl_db_.get(), o, inline_post);
  }
  void TearDown() override {
    local_.reset();
    replicated_.reset();
    local_db_.reset();
    repl_db_.reset();
    std::filesystem::remove_all(base_);
  }

  static std::string Call(RequestHandler* h, const std::string& line) {
    auto p = std::make_shared<std::promise<std::string>>();
    auto f = p->get_future();
    h->Handle(line, std::make_shared<Session>(), [p](std::string r) { p->set_value(std::move(r)); });
    EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready) << line;
    return f.get();
  }

  std::filesystem::path base_;
  std::unique_ptr<DB> local_db_, repl_db_;
  std::unique_ptr<FakeReplication> replication_;
  std::unique_ptr<RequestHandler> local_, replicated_;
};

TEST_F(ReplicatedHandlerTest, AnswersAsTheStandaloneHandlerDoes) {
  const char* requests[] = {
      R"({"id":1,"op":"set","key":"a","value":{"y":1,"x":[1,2]}})",
      R"({"op":"set","key":"b","value":"two"})",
      R"({"op":"get","key":"a"})",
      R"({"op":"get","key":"missing"})",
      R"({"op":"delete","key":"b"})",
      R"({"op":"delete","key":"never"})",
      R"({"op":"bulk_set","items":[["c",3],{"key":"d","value":4}]})",
      R"({"op":"bulk_set","items":[["c",3],7]})",
      R"({"op":"bulk_get","keys":["a","c","zz"]})",
      R"({"op":"cas","key":"c","expected":3,"value":30})",
      R"({"op":"cas","key":"c","expected":3,"value":31})",
      R"({"op":"cas","key":"n","expect_absent":true,"value":1})",
      R"({"op":"cas","key":"n","expect_absent":true,"value":2})",
      R"({"op":"cas","key":"zz","expected":1,"value":2})",
      R"({"op":"cas","key":"c","value":2})",
      R"({"op":"txn","compare":[{"key":"c","value":30},{"key":"q","exists":false}],"success":[{"op":"set","key":"q","value":1},{"op":"get","key":"q"},{"op":"delete","key":"q"},{"op":"get","key":"q"}],"failure":[{"op":"get","key":"c"}]})",
      R"({"op":"txn","compare":[{"key":"c","value":1,"op":"ne"},{"key":"a","exists":false}],"success":[],"failure":[{"op":"get","key":"c"},{"op":"set","key":"f","value":true}]})",
      R"({"op":"txn","compare":[{"key":"c","value":1,"op":"lt"}]})",
      R"({"op":"set","key":"k"})",
      R"({"op":"set","key":7,"value":1})",
      R"({"op":"scan"})",
      R"({"op":"scan","prefix":"c"})",
  };
  for (const char* r : requests) {
    EXPECT_EQ(Call(replicated_.get(), r), Call(local_.get(), r)) << r;
  }
}

TEST_F(ReplicatedHandlerTest, FollowerRedirectsUnlessStale) {
  Call(replicated_.get(), R"({"op":"set","key":"a","value":1})");
  replication_->leader = false;
  for (const char* r : {R"({"op":"set","key":"a","value":2})", R"({"op":"get","key":"a"})",
                        R"({"op":"scan"})", R"({"op":"txn","compare":[]})"}) {
    json j = json::parse(Call(replicated_.get(), r));
    EXPECT_EQ(j["error"]["code"], "not_leader") << r;
    EXPECT_EQ(j["error"]["leader"], "10.0.0.2:9000") << r;
  }
  EXPECT_EQ(Call(replicated_.get(), R"({"op":"get","key":"a","stale":true})"), R"({"ok":true,"result":1})");
  EXPECT_EQ(json::parse(Call(replicated_.get(), R"({"op":"get","key":"a","stale":1})"))["error"]["code"],
            "bad_request");
  EXPECT_EQ(Call(replicated_.get(), R"({"op":"ping"})"), R"({"ok":true,"result":"pong"})");
}

TEST_F(ReplicatedHandlerTest, ScansAndStatsKeepTheServersKeysApart) {
  Call(replicated_.get(), R"({"op":"set","key":"a","value":1})");
  // The applied index sits under a 0xff key: never in a scan.
  EXPECT_EQ(Call(replicated_.get(), R"({"op":"scan"})"),
            R"({"ok":true,"result":{"items":[{"key":"a","value":1}],"more":false}})");
  json stats = json::parse(Call(replicated_.get(), R"({"op":"stats"})"));
  EXPECT_EQ(stats["result"]["cluster"]["role"], "leader");
  EXPECT_NE(replicated_->PrometheusText().find("kvstore_raft_is_leader 1"), std::string::npos);
  EXPECT_EQ(json::parse(Call(local_.get(), R"({"op":"transfer_leader"})"))["error"]["code"], "unavailable");
  EXPECT_EQ(Call(replicated_.get(), R"({"op":"transfer_leader","to":2})"), R"({"ok":true,"result":{"leader_id":2}})");
}

// Puts with their own vectors (a semantic index of client vectors, 4
// dimensions): the same answers through the log as standalone, bad vectors
// refused before anything is proposed, and the vectors searchable after.
TEST_F(ReplicatedHandlerTest, PutsWithVectorsAnswerAsStandalone) {
  local_.reset();
  replicated_.reset();
  local_db_.reset();
  repl_db_.reset();
  std::filesystem::remove_all(base_);
  std::filesystem::create_directories(base_);
  Options options;
  options.search.enabled = true;
  options.search.embedder = NewClientVectorsEmbedder(4);
  options.search.excluded_prefixes = {"\xff"};  // as kvserver: not the applied index
  ASSERT_TRUE(DB::Open(options, (base_ / "local").string(), &local_db_).ok());
  ASSERT_TRUE(DB::Open(options, (base_ / "replicated").string(), &repl_db_).ok());
  replication_ = std::make_unique<FakeReplication>(repl_db_.get());
  auto inline_post = [](std::function<void()> fn) { fn(); };
  local_ = std::make_unique<RequestHandler>(local_db_.get(), HandlerOptions{}, inline_post);
  HandlerOptions o;
  o.replication = replication_.get();
  replicated_ = std::make_unique<RequestHandler>(repl_db_.get(), o, inline_post);

  const char* requests[] = {
      R"({"op":"set","key":"a","value":"alpha","vector":[1,0,0,0]})",
      R"({"op":"bulk_set","items":[["b","beta",[0,1,0,0]],{"key":"c","value":"gamma","vector":[0,0,1,0.5]},["d","delta"]]})",
      R"({"op":"set","key":"e","value":"x","vector":[1,2,3]})",
      R"({"op":"set","key":"e","value":"x","vector":[0,0,0,0]})",
      R"({"op":"set","key":"e","value":"x","vector":[1,"2",3,4]})",
      R"({"op":"set","key":"e","value":"x","vector":[1e39,0,0,0]})",
      R"({"op":"set","key":"e","value":"x","vector":{"a":1}})",
      R"({"op":"bulk_set","items":[["f","ok",[1,1,1,1]],["g","bad",[1,1]]]})",
      R"({"op":"bulk_set","items":[["h","x",[1,1,1,1],4]]})",
      R"({"op":"get","key":"f"})",
      R"({"op":"semantic_search","vector":[1,0.1,0,0],"k":2,"threshold":0})",
      R"({"op":"semantic_search","vector":[0,0,1,0.4],"k":1,"threshold":0})",
      R"({"op":"semantic_search","query":"alpha"})",
      R"({"op":"fulltext_search","query":"delta"})",
  };
  for (const char* r : requests) {
    EXPECT_EQ(Call(replicated_.get(), r), Call(local_.get(), r)) << r;
  }
  EXPECT_EQ(json::parse(Call(local_.get(), requests[0]))["ok"], true);
  EXPECT_EQ(json::parse(Call(local_.get(), requests[1]))["ok"], true);
  EXPECT_EQ(json::parse(Call(local_.get(), requests[2]))["error"]["code"], "bad_request");
  json near = json::parse(Call(local_.get(), requests[10]));
  ASSERT_EQ(near["result"].size(), 2u) << near;
  EXPECT_EQ(near["result"][0]["key"], "a");
  EXPECT_EQ(json::parse(Call(local_.get(), requests[11]))["result"][0]["key"], "c");
  EXPECT_EQ(json::parse(Call(local_.get(), requests[3]))["error"]["code"], "bad_request");
  EXPECT_EQ(json::parse(Call(local_.get(), requests[7]))["error"]["code"], "bad_request");
  EXPECT_EQ(json::parse(Call(local_.get(), requests[9]))["error"]["code"], "not_found");  // f's batch failed whole
  EXPECT_EQ(json::parse(Call(local_.get(), requests[12]))["error"]["code"], "unavailable");
}

// A server without a semantic index refuses a put's vector, writing nothing.
TEST_F(ReplicatedHandlerTest, VectorsNeedASemanticIndex) {
  const char* put = R"({"op":"set","key":"a","value":"alpha","vector":[1,0,0,0]})";
  EXPECT_EQ(Call(replicated_.get(), put), Call(local_.get(), put));
  EXPECT_EQ(json::parse(Call(local_.get(), put))["error"]["code"], "unavailable");
  EXPECT_EQ(json::parse(Call(local_.get(), R"({"op":"get","key":"a"})"))["error"]["code"], "not_found");
}

// Retries named by a request_id apply once, standalone and through the log
// alike; a cas retried after it succeeded answers its first answer, not a
// conflict; another write under a used name writes nothing.
TEST_F(ReplicatedHandlerTest, RequestIdsApplyAtMostOnce) {
  const char* requests[] = {
      R"({"op":"cas","key":"c","expect_absent":true,"value":1,"request_id":"r1"})",
      R"({"op":"cas","key":"c","expect_absent":true,"value":1,"request_id":"r1"})",
      R"({"op":"set","key":"c","value":5,"request_id":"r1"})",
      R"({"op":"get","key":"c"})",
      R"({"op":"cas","key":"c","expected":7,"value":8,"request_id":"r2"})",
      R"({"op":"set","key":"c","value":7})",
      R"({"op":"cas","key":"c","expected":7,"value":8,"request_id":"r2"})",
      R"({"op":"get","key":"c"})",
      R"({"op":"txn","compare":[],"success":[{"op":"set","key":"t","value":1},{"op":"get","key":"t"}],"request_id":"r3"})",
      R"({"op":"txn","compare":[],"success":[{"op":"set","key":"t","value":1},{"op":"get","key":"t"}],"request_id":"r3"})",
      R"({"op":"bulk_set","items":[["b1",1],["b2",2]],"request_id":"r4"})",
      R"({"op":"delete","key":"b1","request_id":"r5"})",
      R"({"op":"bulk_set","items":[["b1",1],["b2",2]],"request_id":"r4"})",
      R"({"op":"get","key":"b1"})",
      R"({"op":"set","key":"x","value":1,"request_id":""})",
      R"({"op":"set","key":"x","value":1,"request_id":7})",
      R"({"op":"scan"})",
  };
  std::vector<std::string> answers;
  for (const char* r : requests) {
    answers.push_back(Call(local_.get(), r));
    EXPECT_EQ(Call(replicated_.get(), r), answers.back()) << r;
  }
  EXPECT_EQ(answers[1], answers[0]);
  EXPECT_EQ(answers[2], answers[0]);
  EXPECT_EQ(answers[3], R"({"ok":true,"result":1})");  // neither the retry nor the reuse wrote
  EXPECT_EQ(json::parse(answers[4])["error"]["code"], "conflict");
  EXPECT_EQ(answers[6], answers[4]);  // the first answer, though the cas would succeed now
  EXPECT_EQ(answers[7], R"({"ok":true,"result":7})");
  EXPECT_EQ(answers[9], answers[8]);
  EXPECT_EQ(answers[13], R"({"ok":false,"error":{"code":"not_found","message":"key not found"}})");
  EXPECT_EQ(json::parse(answers[14])["error"]["code"], "bad_request");
  EXPECT_EQ(json::parse(answers[15])["error"]["code"], "bad_request");
  EXPECT_EQ(answers[16].find("kvstore/req"), std::string::npos);  // the server's keys stay out of scans
}

// The store remembers the newest ids only, and every replica forgets the
// same ones: a ring of slots, written with each named write.
TEST(WriteCommandTest, EvaluateOnceForgetsTheOldestIds) {
  std::map<std::string, std::string> store;
  CommandReader read = [&](std::string_view key, std::optional<std::string>* value) {
    auto it = store.find(std::string(key));
    if (it != store.end()) *value = it->second;
    return Status::OK();
  };
  struct Applier final : WriteBatch::Handler {
    std::map<std::string, std::string>* store;
    void Put(std::string_view k, std::string_view v) override { (*store)[std::string(k)] = std::string(v); }
    void Delete(std::string_view k) override { store->erase(std::string(k)); }
  };
  auto apply = [&](const std::string& id, const std::string& value) {
    WriteCommand c;
    c.kind = WriteCommand::Kind::kSet;
    c.success.push_back({WriteCommand::Op::kSet, "k", value});
    c.request_id = id;
    CommandOverlay overlay;
    WriteBatch batch;
    ReplicaAnswer a = EvaluateOnce(c, read, &overlay, &batch, /*remembered=*/2);
    Applier applier;
    applier.store = &store;
    EXPECT_TRUE(batch.Iterate(&applier).ok());
    return a;
  };
  EXPECT_TRUE(apply("a", "1").ok());
  EXPECT_TRUE(apply("a", "2").ok());  // remembered: not applied
  EXPECT_EQ(store["k"], "1");
  EXPECT_TRUE(apply("b", "3").ok());
  EXPECT_TRUE(apply("c", "4").ok());  // takes a's slot: a is forgotten
  EXPECT_EQ(store["k"], "4");
  EXPECT_TRUE(apply("b", "5").ok());  // still remembered
  EXPECT_EQ(store["k"], "4");
  EXPECT_TRUE(apply("a", "6").ok());  // forgotten, so applied again
  EXPECT_EQ(store["k"], "6");
  size_t remembered = 0;
  for (const auto& [k, v] : store) remembered += k.starts_with("\xff\xffkvstore/req/");
  EXPECT_EQ(remembered, 2u);
}

TEST(WriteCommandTest, RoundTripsAndRejectsDamage) {
  WriteCommand c;
  c.kind = WriteCommand::Kind::kTxn;
  c.compares.push_back({WriteCommand::Compare::kNe, "k", "\"v\""});
  c.success.push_back({WriteCommand::Op::kSet, "k", std::string("1\0x", 3)});
  c.success.push_back({WriteCommand::Op::kSet, "v", "1", {1.5f, -2.0f, 0.25f}});
  c.failure.push_back({WriteCommand::Op::kGet, "", ""});
  const std::string enc = EncodeWriteCommand(c);
  WriteCommand d;
  ASSERT_TRUE(DecodeWriteCommand(enc, &d));
  EXPECT_EQ(EncodeWriteCommand(d), enc);
  ASSERT_EQ(d.success.size(), 2u);
  EXPECT_TRUE(d.success[0].vector.empty());
  EXPECT_EQ(d.success[1].vector, (std::vector<float>{1.5f, -2.0f, 0.25f}));
  for (size_t n = 0; n < enc.size(); ++n) EXPECT_FALSE(DecodeWriteCommand(enc.substr(0, n), &d)) << n;
  EXPECT_FALSE(DecodeWriteCommand(enc + "x", &d));
  EXPECT_TRUE(d.request_id.empty());
  // A request id rides in a trailer that older entries do not have.
  c.request_id = "retry-7";
  const std::string named = EncodeWriteCommand(c);
  ASSERT_TRUE(DecodeWriteCommand(named, &d));
  EXPECT_EQ(d.request_id, "retry-7");
  ASSERT_TRUE(DecodeWriteCommand(enc, &d));
  EXPECT_TRUE(d.request_id.empty());
  for (size_t n = enc.size() + 1; n < named.size(); ++n) EXPECT_FALSE(DecodeWriteCommand(named.substr(0, n), &d)) << n;
  std::string bad = enc;
  bad[0] = 9;
  EXPECT_FALSE(DecodeWriteCommand(bad, &d));
}

}  // namespace
}  // namespace kvstore::net
