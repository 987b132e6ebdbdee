// The request handler over a real DB, without sockets: every op and every
// error response.
#include "net/handler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

namespace kvstore::net {
namespace {

using json = nlohmann::json;

class HandlerTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(HandlerOptions{}); }

  void Open(HandlerOptions options) {
    handler_.reset();
    db_.reset();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("handler_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(DB::Open(Options{}, dir_.string(), &db_).ok());
    handler_ = std::make_unique<RequestHandler>(db_.get(), std::move(options),
                                                [](std::function<void()> fn) { fn(); });
  }

  void TearDown() override {
    handler_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string RawCall(std::string_view line, std::shared_ptr<Session> session = nullptr) {
    auto p = std::make_shared<std::promise<std::string>>();
    auto f = p->get_future();
    handler_->Handle(line, session ? session : session_, [p](std::string r) { p->set_value(std::move(r)); });
    EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready) << line;
    return f.get();
  }

  json Call(const json& req) { return json::parse(RawCall(req.dump())); }

  // The error code of a response, or "" when it succeeded.
  static std::string Code(const json& r) {
    return r.at("ok").get<bool>() ? "" : r.at("error").at("code").get<std::string>();
  }

  std::filesystem::path dir_;
  std::unique_ptr<DB> db_;
  std::unique_ptr<RequestHandler> handler_;
  std::shared_ptr<Session> session_ = std::make_shared<Session>();
};

TEST_F(HandlerTest, PingEchoesIdOfAnyScalar) {
  EXPECT_EQ(RawCall(R"({"op":"ping","id":7})"), R"({"id":7,"ok":true,"result":"pong"})");
  EXPECT_EQ(RawCall(R"({"id":"x","op":"ping"})"), R"({"id":"x","ok":true,"result":"pong"})");
  EXPECT_EQ(RawCall(R"({"op":"ping"})"), R"({"ok":true,"result":"pong"})");
  EXPECT_EQ(Code(Call({{"op", "ping"}, {"id", {1, 2}}})), "bad_request");
}

TEST_F(HandlerTest, ErrorLinesAreWhatTheJsonLibraryWrites) {
  // Plain messages are written by hand, the rest through nlohmann: both
  // give the same bytes (members in name order, escapes where needed).
  for (const std::string& line : {std::string(R"({"op":"get","key":"nope","id":3})"),
                                  std::string(R"({"op":"nope\"x"})"),
                                  std::string(R"({"op":"get"})")}) {
    const std::string raw = RawCall(line);
    json r = json::parse(raw);
    EXPECT_TRUE(raw.ends_with("\"ok\":false,\"error\":" + r["error"].dump() + "}")) << raw;
  }
  EXPECT_EQ(RawCall(R"({"op":"get","key":"nope","id":3})"),
            R"({"id":3,"ok":false,"error":{"code":"not_found","message":"key not found"}})");
}

TEST_F(HandlerTest, SetGetDeleteRoundTripAnyJsonValue) {
  for (const json& v : {json("Alice"), json(42), json(nullptr), json(true), json::array({1, "a"}),
                        json{{"b", 1}, {"a", {{"nested", true}}}}}) {
    json r = Call({{"op", "set"}, {"key", "k"}, {"value", v}, {"id", 1}});
    EXPECT_EQ(r, (json{{"id", 1}, {"ok", true}, {"result", nullptr}}));
    r = Call({{"op", "get"}, {"key", "k"}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r;
    EXPECT_EQ(r["result"], v);
  }
  // Stored canonically: members in key order, no spaces.
  std::string stored;
  ASSERT_TRUE(db_->Get(ReadOptions{}, "k", &stored).ok());
  EXPECT_EQ(stored, R"({"a":{"nested":true},"b":1})");
  EXPECT_TRUE(Call({{"op", "delete"}, {"key", "k"}})["ok"].get<bool>());
  json r = Call({{"op", "get"}, {"key", "k"}, {"id", 2}});
  EXPECT_EQ(Code(r), "not_found");
  EXPECT_EQ(r["id"], 2);
  EXPECT_TRUE(Call({{"op", "delete"}, {"key", "never"}})["ok"].get<bool>());
}

TEST_F(HandlerTest, BulkSetIsOneBatchAndBulkGetOmitsMissing) {
  json r = Call({{"op", "bulk_set"},
                 {"items", {{"a", 1}, {"b", {{"x", 2}}}, {{"key", "c"}, {"value", "three"}}}}});
  ASSERT_EQ(Code(r), "") << r;
  EXPECT_EQ(r["result"]["count"], 3);
  r = Call({{"op", "bulk_get"}, {"keys", {"a", "b", "c", "zz"}}});
  EXPECT_EQ(r["result"], (json{{"a", 1}, {"b", {{"x", 2}}}, {"c", "three"}}));
  // A bad item fails the whole request before anything is written.
  r = Call({{"op", "bulk_set"}, {"items", {{"d", 1}, {5, 2}}}});
  EXPECT_EQ(Code(r), "bad_request");
  EXPECT_EQ(Code(Call({{"op", "get"}, {"key", "d"}})), "not_found");
  EXPECT_EQ(Code(Call({{"op", "bulk_set"}, {"items", {{"d"}}}})), "bad_request");
  EXPECT_EQ(Code(Call({{"op", "bulk_set"}, {"items", "no"}})), "bad_request");
  EXPECT_EQ(Code(Call({{"op", "bulk_get"}, {"keys", {1}}})), "bad_request");
  EXPECT_EQ(Call({{"op", "bulk_set"}, {"items", json::array()}})["result"]["count"], 0);
}

TEST_F(HandlerTest, ScanByPrefixRangeAndLimitInKeyOrder) {
  json items = json::parse(R"([["user:3",3],["user:1",1],["user:2",2],["video:1","v"],["a",0]])");
  ASSERT_EQ(Code(Call({{"op", "bulk_set"}, {"items", items}})), "");
  json r = Call({{"op", "scan"}, {"prefix", "user:"}});
  ASSERT_EQ(Code(r), "") << r;
  EXPECT_EQ(r["result"]["items"],
            json::parse(R"([{"key":"user:1","value":1},{"key":"user:2","value":2},{"key":"user:3","value":3}])"));
  EXPECT_EQ(r["result"]["more"], false);
  r = Call({{"op", "scan"}, {"start", "user:2"}, {"end", "video:1"}});
  EXPECT_EQ(r["result"]["items"].size(), 2u);
  EXPECT_EQ(r["result"]["items"][0]["key"], "user:2");
  r = Call({{"op", "scan"}, {"limit", 2}});
  EXPECT_EQ(r["result"]["items"].size(), 2u);
  EXPECT_EQ(r["result"]["items"][0]["key"], "a");
  EXPECT_EQ(r["result"]["more"], true);
  EXPECT_EQ(Code(Call({{"op", "scan"}, {"limit", 0}})), "bad_request");
  EXPECT_EQ(Code(Call({{"op", "scan"}, {"limit", -1}})), "bad_request");
  EXPECT_EQ(Code(Call({{"op", "scan"}, {"limit", 1u << 30}})), "too_large");
  EXPECT_EQ(Code(Call({{"op", "scan"}, {"prefix", "a"}, {"start", "b"}})), "bad_request");
  EXPECT_EQ(Code(Call({{"op", "scan"}, {"prefix", 1}})), "bad_request");
}

TEST_F(HandlerTest, ScanStopsAtTheByteBudgetWithMore) {
  HandlerOptions o;
  o.max_scan_bytes = 1000;
  Open(o);
  json items = json::array();
  for (int i = 0; i < 10; ++i) items.push_back({"k" + std::to_string(i), std::string(300, 'v')});
  ASSERT_EQ(Code(Call({{"op", "bulk_set"}, {"items", items}})), "");
  json r = Call({{"op", "scan"}, {"prefix", "k"}});
  ASSERT_EQ(Code(r), "") << r;
  EXPECT_EQ(r["result"]["items"].size(), 4u);  // the 4th crosses 1000 bytes
  EXPECT_EQ(r["result"]["more"], true);
  // One entry always fits, however large, so a scan always makes progress.
  ASSERT_EQ(Code(Call({{"op", "set"}, {"key", "huge"}, {"value", std::string(5000, 'h')}})), "");
  r = Call({{"op", "scan"}, {"prefix", "huge"}});
  EXPECT_EQ(r["result"]["items"].size(), 1u);
  EXPECT_EQ(r["result"]["more"], false);
}

TEST_F(HandlerTest, CasComparesCurrentValueOrAbsence) {
  auto cas = [&](json extra) {
    json req = {{"op", "cas"}, {"key", "c"}};
    req.update(extra);
    return Call(req);
  };
  EXPECT_EQ(Code(cas({{"expect_absent", true}, {"value", 1}})), "");
  json r = cas({{"expect_absent", true}, {"value", 2}});
  EXPECT_EQ(Code(r), "conflict");
  EXPECT_EQ(r["error"]["current"], 1);
  EXPECT_EQ(Code(cas({{"expected", 2}, {"value", 3}})), "conflict");
  EXPECT_EQ(Code(cas({{"expected", 1}, {"value", {{"n", 2}}}})), "");
  // Canonical comparison: member order does not matter.
  EXPECT_EQ(Code(cas({{"expected", json::parse(R"({"n":2})")}, {"value", "done"}})), "");
  EXPECT_EQ(Call({{"op", "get"}, {"key", "c"}})["result"], "done");
  EXPECT_EQ(Code(cas({{"value", 1}})), "bad_request");  // neither expected nor expect_absent
  EXPECT_EQ(Code(cas({{"expected", 1}, {"expect_absent", true}, {"value", 1}})), "bad_request");
  EXPECT_EQ(Code(cas({{"expected", "done"}})), "bad_request");  // no value
  Call({{"op", "delete"}, {"key", "c"}});
  r = cas({{"expected", "done"}, {"value", 1}});
  EXPECT_EQ(Code(r), "conflict");
  EXPECT_FALSE(r["error"].contains("current"));
}

TEST_F(HandlerTest, TxnRunsSuccessOrFailureBranch) {
  Call({{"op", "set"}, {"key", "balance"}, {"value", 10}});
  json txn = json::parse(R"({"op":"txn",
    "compare":[{"key":"balance","value":10},{"key":"lock","exists":false}],
    "success":[{"op":"set","key":"balance","value":5},{"op":"get","key":"balance"},{"op":"delete","key":"tmp"}],
    "failure":[{"op":"get","key":"balance"}]})");
  json r = Call(txn);
  ASSERT_EQ(Code(r), "") << r;
  EXPECT_EQ(r["result"]["succeeded"], true);
  EXPECT_EQ(r["result"]["results"][1], (json{{"found", true}, {"value", 5}}));
  EXPECT_EQ(Call({{"op", "get"}, {"key", "balance"}})["result"], 5);
  r = Call(txn);  // balance is 5 now
  EXPECT_EQ(r["result"]["succeeded"], false);
  EXPECT_EQ(r["result"]["results"][0]["value"], 5);
  r = Call(json::parse(R"({"op":"txn","compare":[{"key":"balance","value":5,"op":"ne"}],
                           "failure":[{"op":"get","key":"missing"}]})"));
  EXPECT_EQ(r["result"], json::parse(R"({"succeeded":false,"results":[{"found":false}]})"));
  EXPECT_EQ(Code(Call(json::parse(R"({"op":"txn","compare":[{"key":"a","value":1,"op":"lt"}]})"))), "bad_request");
  EXPECT_EQ(Code(Call(json::parse(R"({"op":"txn","compare":[],"success":[{"op":"incr","key":"a"}]})"))), "bad_request");
  EXPECT_EQ(Code(Call(json::parse(R"({"op":"txn","compare":{}})"))), "bad_request");
  EXPECT_EQ(Code(Call(json::parse(R"({"op":"txn"})"))), "bad_request");
}

// Many threads increment one counter with cas; every success must count.
TEST_F(HandlerTest, ConcurrentCasIncrementsLoseNothing) {
  Call({{"op", "set"}, {"key", "n"}, {"value", 0}});
  constexpr int kThreads = 4, kPerThread = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto s = std::make_shared<Session>();
      for (int done = 0; done < kPerThread;) {
        json cur = json::parse(RawCall(R"({"op":"get","key":"n"})", s))["result"];
        json r = json::parse(RawCall(
            json{{"op", "cas"}, {"key", "n"}, {"expected", cur}, {"value", cur.get<int>() + 1}}.dump(), s));
        if (r["ok"].get<bool>()) ++done;
        // Plain sets of other keys interleave and must not break anything.
        RawCall(R"({"op":"set","key":"other","value":1})", s);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(Call({{"op", "get"}, {"key", "n"}})["result"], kThreads * kPerThread);
}

// cas and txn increments of the same short key (short enough for the small
// string optimisation, which once made txn lock a different stripe than cas)
// exclude each other: every acknowledged increment counts.
TEST_F(HandlerTest, TxnAndCasIncrementsOfOneKeyExcludeEachOther) {
  Call({{"op", "set"}, {"key", "n"}, {"value", 0}});
  constexpr int kThreads = 4, kPerThread = 40;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto s = std::make_shared<Session>();
      for (int done = 0; done < kPerThread;) {
        json cur = json::parse(RawCall(R"({"op":"get","key":"n"})", s))["result"];
        const int next = cur.get<int>() + 1;
        json req = t % 2 == 0 ? json{{"op", "cas"}, {"key", "n"}, {"expected", cur}, {"value", next}}
                              : json{{"op", "txn"},
                                     {"compare", {{{"key", "n"}, {"value", cur}}}},
                                     {"success", {{{"op", "set"}, {"key", "n"}, {"value", next}}}}};
        json r = json::parse(RawCall(req.dump(), s));
        ASSERT_TRUE(r["ok"].get<bool>() || Code(r) == "conflict") << r;
        if (r["ok"].get<bool>() && (t % 2 == 0 || r["result"]["succeeded"].get<bool>())) ++done;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(Call({{"op", "get"}, {"key", "n"}})["result"], kThreads * kPerThread);
}

TEST_F(HandlerTest, BadInputGetsErrorsNotCrashes) {
  EXPECT_EQ(Code(json::parse(RawCall("{not json"))), "bad_request");
  EXPECT_EQ(Code(json::parse(RawCall(""))), "bad_request");
  EXPECT_EQ(Code(json::parse(RawCall("[1,2]"))), "bad_request");
  EXPECT_EQ(Code(json::parse(RawCall("\"op\""))), "bad_request");
  EXPECT_EQ(Code(json::parse(RawCall(R"({"key":"a"})"))), "bad_request");           // no op
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":5})"))), "bad_request");              // op not a string
  json r = json::parse(RawCall(R"({"op":"frobnicate","id":3})"));
  EXPECT_EQ(Code(r), "unknown_op");
  EXPECT_EQ(r["id"], 3);
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"get"})"))), "bad_request");          // missing key
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"get","key":1})"))), "bad_request");  // key not a string
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"get","key":null})"))), "bad_request");
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"set","key":"a"})"))), "bad_request"); // missing value
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"set","key":["a"],"value":1})"))), "bad_request");
  // Invalid UTF-8, inside a string and outside.
  EXPECT_EQ(Code(json::parse(RawCall("{\"op\":\"set\",\"key\":\"\xff\",\"value\":1}"))), "bad_request");
  EXPECT_EQ(Code(json::parse(RawCall("{\"op\":\"ping\"}\xc3"))), "bad_request");
  // Deep nesting is refused before the recursive parser sees it.
  std::string deep = R"({"op":"set","key":"d","value":)" + std::string(100000, '[') +
                     std::string(100000, ']') + "}";
  r = json::parse(RawCall(deep));
  EXPECT_EQ(Code(r), "bad_request");
  EXPECT_NE(r["error"]["message"].get<std::string>().find("nests deeper"), std::string::npos);
  std::string ok_depth = R"({"op":"set","key":"d","value":)" + std::string(60, '[') + std::string(60, ']') + "}";
  EXPECT_EQ(Code(json::parse(RawCall(ok_depth))), "");
  // Too-large keys.
  EXPECT_EQ(Code(Call({{"op", "set"}, {"key", std::string(kMaxKeySize + 1, 'k')}, {"value", 1}})), "too_large");
  // Still serving.
  EXPECT_EQ(RawCall(R"({"op":"ping"})"), R"({"ok":true,"result":"pong"})");
}

TEST_F(HandlerTest, FlushCompactAndCheckpoint) {
  for (int i = 0; i < 100; i++) Call({{"op", "set"}, {"key", "k" + std::to_string(i)}, {"value", i}});
  Call({{"op", "delete"}, {"key", "k7"}});
  EXPECT_EQ(Code(Call({{"op", "flush"}})), "");
  EXPECT_EQ(Code(Call({{"op", "compact"}})), "");
  EXPECT_EQ(Code(Call({{"op", "compact"}, {"start", "k1"}, {"end", "k5"}})), "");
  EXPECT_EQ(Code(Call({{"op", "compact"}, {"start", 5}})), "bad_request");
  json st = Call({{"op", "stats"}})["result"];
  EXPECT_GE(st["flushes"].get<int>(), 1);
  EXPECT_GE(st["compactions"].get<int>(), 1);
  EXPECT_EQ(st["levels"][0]["files"], 0);  // compacted out of L0
  // Checkpoints are off unless the server has a directory for them.
  EXPECT_EQ(Code(Call({{"op", "checkpoint"}, {"name", "b1"}})), "unavailable");

  HandlerOptions options;
  options.checkpoint_dir = (dir_.string() + "-checkpoints");
  std::filesystem::remove_all(options.checkpoint_dir);
  std::filesystem::create_directories(options.checkpoint_dir);
  const std::string root = options.checkpoint_dir;
  Open(std::move(options));
  Call({{"op", "set"}, {"key", "saved"}, {"value", {{"a", 1}}}});
  json r = Call({{"op", "checkpoint"}, {"name", "b1"}});
  ASSERT_EQ(Code(r), "") << r;
  EXPECT_EQ(r["result"]["dir"], root + "/b1");
  for (const char* bad : {"", "..", "a/b", "/etc"}) {
    EXPECT_EQ(Code(Call({{"op", "checkpoint"}, {"name", bad}})), "bad_request") << bad;
  }
  EXPECT_EQ(Code(Call({{"op", "checkpoint"}, {"name", "b1"}})), "bad_request");  // exists
  std::unique_ptr<DB> copy;
  ASSERT_TRUE(DB::Open(Options{}, root + "/b1", &copy).ok());
  std::string v;
  ASSERT_TRUE(copy->Get(ReadOptions{}, "saved", &v).ok());
  EXPECT_EQ(v, R"({"a":1})");
  copy.reset();
  std::filesystem::remove_all(root);
}

TEST_F(HandlerTest, SearchesOnAStoreWithoutIndexesAnswerUnavailable) {
  for (const char* op : {"search_by_value", "fulltext_search", "semantic_search"}) {
    json r = Call({{"op", op}, {"query", "x"}, {"value", "x"}});
    EXPECT_EQ(Code(r), "unavailable") << op;
    EXPECT_NE(r["error"]["message"].get<std::string>().find("search"), std::string::npos) << r;
  }
}

TEST_F(HandlerTest, StatsReportsEngineConnectionsAndOps) {
  Call({{"op", "set"}, {"key", "a"}, {"value", 1}});
  Call({{"op", "set"}, {"key", "b"}, {"value", 2}});
  Call({{"op", "get"}, {"key", "nope"}});
  handler_->connections = 3;
  json r = Call({{"op", "stats"}});
  ASSERT_EQ(Code(r), "") << r;
  const json& s = r["result"];
  EXPECT_EQ(s["keys"], 2);
  EXPECT_GT(s["wal_size"].get<uint64_t>(), 0u);
  EXPECT_EQ(s["wal_size"], s["wal_bytes"]);
  for (const char* f : {"sequence", "memtable_bytes", "immutable_memtables", "wal_segments",
                        "live_keys_estimate", "writes", "write_groups", "wal_syncs", "snapshots",
                        "read_only", "read_only_reason"}) {
    EXPECT_TRUE(s.contains(f)) << f;
  }
  EXPECT_EQ(s["connections"], 3);
  EXPECT_EQ(s["ops"]["set"]["count"], 2);
  EXPECT_EQ(s["ops"]["get"]["count"], 1);
  EXPECT_EQ(s["ops"]["get"]["errors"], 1);
}

TEST_F(HandlerTest, AuthGatesEveryOpUntilTheRightToken) {
  HandlerOptions o;
  o.auth_token = "s3cret";
  Open(o);
  auto s = std::make_shared<Session>();
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"get","key":"a"})", s))), "unauthorized");
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"ping"})", s))), "unauthorized");
  json r = json::parse(RawCall(R"({"op":"auth","token":"wrong!"})", s));
  EXPECT_EQ(Code(r), "unauthorized");
  EXPECT_EQ(r.dump().find("s3cret"), std::string::npos);
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"auth","token":5})", s))), "bad_request");
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"auth","token":"s3cret"})", s))), "");
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"ping"})", s))), "");
  auto other = std::make_shared<Session>();  // authentication is per connection
  EXPECT_EQ(Code(json::parse(RawCall(R"({"op":"ping"})", other))), "unauthorized");
}

// A connection's requests keep their order: reads sent after writes see
// them, even though the writes are still waiting for their fsync when the
// reads arrive.
TEST_F(HandlerTest, ReadsWaitForEarlierWritesOfTheirSession) {
  auto s = std::make_shared<Session>();
  std::mutex mu;
  std::vector<std::string> responses(200);
  std::atomic<int> left{200};
  std::promise<void> all;
  for (int i = 0; i < 100; ++i) {
    auto record = [&, i](int slot) {
      return [&, slot](std::string r) {
        {
          std::lock_guard lock(mu);
          responses[slot] = std::move(r);
        }
        if (--left == 0) all.set_value();
      };
    };
    std::string k = "\"k" + std::to_string(i % 7) + "\"";
    handler_->Handle(R"({"op":"set","key":)" + k + R"(,"value":)" + std::to_string(i) + "}", s, record(2 * i));
    handler_->Handle(R"({"op":"get","key":)" + k + "}", s, record(2 * i + 1));
  }
  ASSERT_EQ(all.get_future().wait_for(std::chrono::seconds(20)), std::future_status::ready);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(responses[2 * i + 1], R"({"ok":true,"result":)" + std::to_string(i) + "}") << i;
  }
}


// Responses in slots, for a pipeline handed to Handle without waiting.
class Collector {
 public:
  explicit Collector(size_t n) : responses_(n) {}
  RequestHandler::Done Slot(size_t i) {
    return [this, i](std::string r) {
      std::lock_guard lock(mu_);
      responses_[i] = std::move(r);
      ++answered_;
      cv_.notify_all();
    };
  }
  bool WaitFor(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return answered_ >= n; });
  }
  size_t answered() {
    std::lock_guard lock(mu_);
    return answered_;
  }
  std::string at(size_t i) {
    std::lock_guard lock(mu_);
    return responses_[i];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> responses_;
  size_t answered_ = 0;
};

TEST_F(HandlerTest, CoalescedWritesAreOneBatchAnsweredAfterTheFlush) {
  auto s = std::make_shared<Session>();
  s->coalesce_writes = true;
  const uint64_t writes_before = db_->GetStats().writes;
  Collector c(10);
  for (int i = 0; i < 9; ++i) {
    handler_->Handle(R"({"op":"set","id":)" + std::to_string(i) + R"(,"key":"k)" + std::to_string(i % 4) +
                         R"(","value":)" + std::to_string(i) + "}",
                     s, c.Slot(i));
  }
  handler_->Handle(R"({"op":"delete","key":"k3"})", s, c.Slot(9));
  // Gathered, not committed: nothing is answered before the flush.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(c.answered(), 0u);
  EXPECT_EQ(db_->GetStats().writes, writes_before);
  handler_->FlushWrites(s);
  ASSERT_TRUE(c.WaitFor(10));
  for (int i = 0; i < 9; ++i) {
    EXPECT_EQ(c.at(i), R"({"id":)" + std::to_string(i) + R"(,"ok":true,"result":null})");
  }
  EXPECT_EQ(c.at(9), R"({"ok":true,"result":null})");
  EXPECT_EQ(db_->GetStats().writes, writes_before + 1);  // one batch for all ten
  // The last write of each key won, as if committed one by one.
  EXPECT_EQ(RawCall(R"({"op":"get","key":"k0"})"), R"({"ok":true,"result":8})");
  EXPECT_EQ(RawCall(R"({"op":"get","key":"k1"})"), R"({"ok":true,"result":5})");
  EXPECT_EQ(RawCall(R"({"op":"get","key":"k2"})"), R"({"ok":true,"result":6})");
  EXPECT_EQ(Code(Call({{"op", "get"}, {"key", "k3"}})), "not_found");
  handler_->FlushWrites(s);  // nothing gathered: a no-op
}

TEST_F(HandlerTest, CoalescedWritesKeepTheirOrderAgainstOtherRequests) {
  auto s = std::make_shared<Session>();
  s->coalesce_writes = true;
  // One "read" mixing gathered sets with a read, a cas, a bulk_set and a
  // non-simple set of the same key: each sees the writes before it.
  const std::vector<std::string> lines = {
      R"({"op":"set","key":"a","value":1})",
      R"({"op":"get","key":"a"})",
      R"({"op":"set","key":"a","value":2})",
      R"({"op":"cas","key":"a","expected":2,"value":3})",
      R"({"op":"set","key":"a","value":4})",
      R"({"op":"bulk_set","items":[["a",5]]})",
      R"({"op":"set","key":"a","value":6})",
      R"({"op":"set","key":"a","value":{"x":7}})",
      R"({"op":"set","key":"a","value":8})",
      R"({"op":"get","key":"a"})",
  };
  Collector c(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) handler_->Handle(lines[i], s, c.Slot(i));
  handler_->FlushWrites(s);
  ASSERT_TRUE(c.WaitFor(lines.size()));
  EXPECT_EQ(c.at(1), R"({"ok":true,"result":1})");
  EXPECT_EQ(c.at(3), R"({"ok":true,"result":null})") << "the cas saw the set before it";
  EXPECT_EQ(c.at(9), R"({"ok":true,"result":8})");
  for (size_t i : {0, 2, 4, 6, 7, 8}) EXPECT_EQ(c.at(i), R"({"ok":true,"result":null})") << i;
  EXPECT_EQ(RawCall(R"({"op":"get","key":"a"})"), R"({"ok":true,"result":8})");
}

TEST_F(HandlerTest, CoalescedWritesStartBeforeLaterWritesOfTheirSession) {
  auto s = std::make_shared<Session>();
  s->coalesce_writes = true;
  // No read in between, so every write starts at once: a gathered set must
  // still reach the engine before the write that followed it.
  const std::vector<std::string> lines = {
      R"({"op":"set","key":"a","value":1})",
      R"({"op":"bulk_set","items":[["a",2]]})",
      R"({"op":"set","key":"b","value":1})",
      R"({"op":"set","key":"b","value":{"x":2}})",
      R"({"op":"set","key":"c","value":1})",
      R"({"op":"cas","key":"c","expected":1,"value":3})",
      R"({"op":"set","key":"d","value":1})",
      R"({"op":"txn","compare":[{"key":"d","value":1}],"success":[{"op":"set","key":"d","value":2}]})",
  };
  Collector c(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) handler_->Handle(lines[i], s, c.Slot(i));
  handler_->FlushWrites(s);
  ASSERT_TRUE(c.WaitFor(lines.size()));
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_NE(c.at(i).find("\"ok\":true"), std::string::npos) << c.at(i);
  EXPECT_EQ(RawCall(R"({"op":"get","key":"a"})"), R"({"ok":true,"result":2})");
  EXPECT_EQ(RawCall(R"({"op":"get","key":"b"})"), R"({"ok":true,"result":{"x":2}})");
  EXPECT_EQ(RawCall(R"({"op":"get","key":"c"})"), R"({"ok":true,"result":3})");
  EXPECT_EQ(RawCall(R"({"op":"get","key":"d"})"), R"({"ok":true,"result":2})");
}

TEST_F(HandlerTest, CoalescingStillAsksForAuth) {
  HandlerOptions o;
  o.auth_token = "t";
  Open(o);
  auto s = std::make_shared<Session>();
  s->coalesce_writes = true;
  Collector c(3);
  handler_->Handle(R"({"op":"set","key":"a","value":1})", s, c.Slot(0));
  handler_->Handle(R"({"op":"auth","token":"t"})", s, c.Slot(1));
  handler_->Handle(R"({"op":"set","key":"a","value":2})", s, c.Slot(2));
  handler_->FlushWrites(s);
  ASSERT_TRUE(c.WaitFor(3));
  EXPECT_EQ(Code(json::parse(c.at(0))), "unauthorized");
  EXPECT_EQ(c.at(2), R"({"ok":true,"result":null})");
}

}  // namespace
}  // namespace kvstore::net
