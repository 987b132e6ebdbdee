// The fast request scanner against nlohmann's full parser: whatever the
// scanner accepts, the full parser must read the same way; and a handler
// with the fast path gives byte-identical responses to one without it.
#include "net/fast_request.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/handler.h"
#include "net/json_guard.h"

namespace kvstore::net {
namespace {

using json = nlohmann::json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Request lines covering the fast path, its edges and what it must refuse.
std::vector<std::string> Inputs() {
  std::vector<std::string> v = {
      R"({"op":"get","key":"k"})",
      R"({"op":"set","key":"k","value":"v"})",
      R"({"op":"delete","key":"k"})",
      R"({"op":"ping"})",
      R"({"op":"ping","id":7})",
      R"({"id":"x","op":"get","key":"k"})",
      R"({"op":"get","key":"k","id":null})",
      R"({"op":"get","key":"k","id":true})",
      R"({"op":"get","key":"k","id":-12})",
      R"({"op":"get","key":"k","id":1.5})",
      R"({"op":"get","key":"k","id":1e3})",
      R"({"op":"get","key":"k","id":-0})",
      R"({"op":"get","key":"k","id":123456789012345678901234})",
      R"({"op":"get","key":"k","id":[1]})",
      R"({"op":"get","key":"k","id":{}})",
      R"(  { "op" : "set" , "key" : "k" , "value" : 42 }  )",
      "{\t\"op\":\"set\",\r\"key\":\"k\",\"value\":true}",
      R"({"op":"set","key":"k","value":false})",
      R"({"op":"set","key":"k","value":null})",
      R"({"op":"set","key":"k","value":-7})",
      R"({"op":"set","key":"k","value":0})",
      R"({"op":"set","key":"k","value":007})",
      R"({"op":"set","key":"k","value":1.0})",
      R"({"op":"set","key":"k","value":{"b":1,"a":2}})",
      R"({"op":"set","key":"k","value":[1,"a"]})",
      R"({"op":"set","key":"k","value":"a\"b"})",
      R"({"op":"set","key":"k","value":"\u00e9"})",
      R"({"op":"set","key":"k","value":"caf)" "\xc3\xa9" R"("})",
      R"({"op":"set","key":"k\/x","value":1})",
      R"({"op":"set","key":"k"})",
      R"({"op":"set","value":1})",
      R"({"op":"get"})",
      R"({"op":"get","key":1})",
      R"({"op":"get","key":null})",
      R"({"op":"get","key":["k"]})",
      R"({"op":"get","key":"k","key":"j"})",
      R"({"op":"get","op":"set","key":"k","value":1})",
      R"({"op":"get","key":"k","extra":1})",
      R"({"op":"get","key":"k",})",
      R"({"op":"get","key":"k"} x)",
      R"({"op":"get","key":"k")",
      R"({"op":"get" "key":"k"})",
      R"({"op":"get","key":"k"}})",
      R"({"op":1,"key":"k"})",
      R"({"op":"nope","key":"k"})",
      R"({"op":"GET","key":"k"})",
      R"({"op":"scan"})",
      R"({"op":"stats"})",
      R"({"key":"k"})",
      R"({})",
      R"([])",
      R"("get")",
      R"(null)",
      R"({"op":"get","key":"k)" "\x01" R"("})",
      R"({"op":"set","key":"k","value":"v)" "\x1f" R"("})",
      R"({"op":"set","key":"k","value":"v)" "\x7f" R"("})",
      R"({"op":"get","key":")" "\xff" R"("})",
      R"({"op":"get","key":")" "\xed\xa0\x80" R"("})",
      R"({"op":"set","key":"k","value":tru})",
      R"({"op":"set","key":"k","value":truex})",
      R"({"op":"set","key":"k","value":-})",
      R"({"op":"set","key":"k","value":1-})",
      R"({"op":"set","key":"k","value":"unterminated})",
      R"({"op":"get","key":"k"})" "\x00",
      std::string(R"({"op":"get","key":"k)") + '\0' + R"("})",
      std::string(100, '[') + std::string(100, ']'),
      R"({"op":"set","key":"k","value":)" + std::string(70, '[') + std::string(70, ']') + "}",
      R"({"op":"get","key":")" + std::string(64 * 1024, 'k') + R"("})",
      R"({"op":"get","key":")" + std::string(64 * 1024 + 1, 'k') + R"("})",
      R"({"op":"set","key":"k","value":")" + std::string(1000, 'v') + R"("})",
      // bulk_set
      R"({"op":"bulk_set","items":[["k","x"],["k/x",1],["k",null],["k/x",true]]})",
      R"({"items":[["k",-3]],"id":5,"op":"bulk_set"})",
      R"( { "op" : "bulk_set" , "items" : [ [ "k" , 1 ] , [ "k/x" , "y" ] ] , "id" : "b" } )",
      R"({"op":"bulk_set","items":[]})",
      R"({"op":"bulk_set","items":[{"key":"k","value":1}]})",
      R"({"op":"bulk_set","items":[["k",[1]]]})",
      R"({"op":"bulk_set","items":[["k",{"b":1,"a":2}]]})",
      R"({"op":"bulk_set","items":[["k",1.5]]})",
      R"({"op":"bulk_set","items":[["k\"x",1]]})",
      R"({"op":"bulk_set","items":[["k"]]})",
      R"({"op":"bulk_set","items":[["k",1,2]]})",
      R"({"op":"bulk_set","items":[[1,1]]})",
      R"({"op":"bulk_set","items":[["k",1],]})",
      R"({"op":"bulk_set","items":[["k",1]],"x":1})",
      R"({"op":"bulk_set","items":[["k",1]],"items":[["k",2]]})",
      R"({"op":"bulk_set","items":"k"})",
      R"({"items":[["k",1]],"op":"set"})",
      R"({"items":[["k",1]]})",
      R"({"op":"bulk_set"})",
      R"({"op":"bulk_set","items":[["k",1]])",
      R"({"op":"bulk_set","items":[["k",1]]} x)",
      R"({"op":"bulk_set","items":[["k",1]],"id":[1]})",
      R"({"op":"bulk_set","items":[[")" + std::string(64 * 1024 + 1, 'k') + R"(",1]]})",
      R"({"op":"bulk_set","items":[["k",")" "\x01" R"("]]})",
  };
  return v;
}

TEST(FastRequestTest, AgreesWithFullParserWheneverItAccepts) {
  size_t accepted = 0;
  for (const std::string& line : Inputs()) {
    if (!IsValidUtf8(line)) continue;  // the scanner's precondition
    FastRequest fast;
    if (!ParseFastRequest(line, &fast)) continue;
    ++accepted;
    SCOPED_TRACE(line);
    json req = json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(req.is_discarded());
    ASSERT_TRUE(req.is_object());
    ASSERT_TRUE(req.contains("op") && req["op"].is_string());
    EXPECT_EQ(req["op"].get<std::string>(), fast.op);
    EXPECT_EQ(req.contains("id"), !fast.id.empty());
    if (req.contains("id")) {
      EXPECT_EQ(Dump(req["id"]), fast.id);
    }
    EXPECT_EQ(req.contains("key"), fast.has_key);
    if (fast.has_key) {
      EXPECT_EQ(req["key"].get<std::string>(), fast.key);
    }
    EXPECT_EQ(req.contains("value"), !fast.value.empty());
    if (req.contains("value")) {
      EXPECT_EQ(Dump(req["value"]), fast.value);
    }
    for (const auto& [name, unused] : req.items()) {
      EXPECT_TRUE(name == "op" || name == "id" || name == "key" || name == "value") << name;
    }
  }
  EXPECT_GT(accepted, 15u);
}

TEST(FastRequestTest, BulkSetAgreesWithFullParserWheneverItAccepts) {
  size_t accepted = 0;
  for (const std::string& line : Inputs()) {
    if (!IsValidUtf8(line)) continue;
    FastBulkSet fast;
    if (!ParseFastBulkSet(line, &fast)) continue;
    ++accepted;
    SCOPED_TRACE(line.substr(0, 200));
    json req = json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(req.is_discarded());
    ASSERT_TRUE(req.is_object());
    EXPECT_EQ(req.value("op", ""), "bulk_set");
    EXPECT_EQ(req.contains("id"), !fast.id.empty());
    if (req.contains("id")) {
      EXPECT_EQ(Dump(req["id"]), fast.id);
    }
    ASSERT_TRUE(req["items"].is_array());
    ASSERT_EQ(req["items"].size(), fast.items.size());
    for (size_t i = 0; i < fast.items.size(); ++i) {
      const json& item = req["items"][i];
      ASSERT_TRUE(item.is_array() && item.size() == 2);
      EXPECT_EQ(item[0].get<std::string>(), fast.items[i].first);
      EXPECT_EQ(Dump(item[1]), fast.items[i].second);
    }
    for (const auto& [name, unused] : req.items()) {
      EXPECT_TRUE(name == "op" || name == "id" || name == "items") << name;
    }
  }
  EXPECT_GE(accepted, 4u);
}

TEST(FastRequestTest, BulkSetRefusesWhatItCannotReproduce) {
  FastBulkSet f;
  for (std::string_view line : {
           R"({"op":"bulk_set","items":[]})",                        // no items
           R"({"op":"bulk_set","items":[{"key":"k","value":1}]})",   // object items
           R"({"op":"bulk_set","items":[["k",[1]]]})",               // nested values
           R"({"op":"bulk_set","items":[["k",1.5]]})",               // floats
           R"({"op":"bulk_set","items":[["a\"b",1]]})",              // escapes
           R"({"op":"bulk_set","items":[["k",1]],"items":[]})",      // repeated member
           R"({"op":"set","items":[["k",1]]})",                      // another op
           R"({"items":[["k",1]]})",                                 // no op
           R"({"op":"bulk_set","items":[["k",1]]}x)",                // trailing bytes
       }) {
    EXPECT_FALSE(ParseFastBulkSet(line, &f)) << line;
  }
  ASSERT_TRUE(ParseFastBulkSet(R"({"items":[["a",1],["b","x"]],"id":7,"op":"bulk_set"})", &f));
  EXPECT_EQ(f.id, "7");
  ASSERT_EQ(f.items.size(), 2u);
  EXPECT_EQ(f.items[0].first, "a");
  EXPECT_EQ(f.items[0].second, "1");
  EXPECT_EQ(f.items[1].first, "b");
  EXPECT_EQ(f.items[1].second, "\"x\"");
}

TEST(FastRequestTest, RefusesWhatItCannotReproduce) {
  FastRequest f;
  for (std::string_view line : {
           R"({"op":"get","key":"a\"b"})",           // escapes
           R"({"op":"set","key":"k","value":1.5})",  // floats
           R"({"op":"set","key":"k","value":1e2})",
           R"({"op":"set","key":"k","value":-0})",
           R"({"op":"set","key":"k","value":1234567890123456789})",  // 19 digits
           R"({"op":"set","key":"k","value":[1]})",  // nested
           R"({"op":"get","key":"k","key":"j"})",    // repeated member
           R"({"op":"get","key":"k","x":1})",        // other member
           R"({"op":"get","key":"k"}x)",             // trailing bytes
           R"({"key":"k"})",                         // no op
           R"({"op":"get","key":1})",                // wrongly typed key
       }) {
    EXPECT_FALSE(ParseFastRequest(line, &f)) << line;
  }
  ASSERT_TRUE(ParseFastRequest(R"( {"value":"v", "id":3,"key":"k","op":"set"} )", &f));
  EXPECT_EQ(f.op, "set");
  EXPECT_EQ(f.id, "3");
  EXPECT_EQ(f.key, "k");
  EXPECT_EQ(f.value, "\"v\"");
}

// The string scan goes eight bytes at a time: a quote, a backslash or a
// control character at every offset of keys and values of every length
// around the word size is found where it is, never skipped over.
TEST(FastRequestTest, StringEndsAndRefusalsAtEveryOffset) {
  FastRequest f;
  for (size_t len = 0; len <= 40; ++len) {
    std::string body;
    for (size_t i = 0; i < len; ++i) body += static_cast<char>('a' + i % 26);
    const std::string plain = R"({"op":"set","key":")" + body + R"(","value":")" + body + R"("})";
    ASSERT_TRUE(ParseFastRequest(plain, &f)) << plain;
    EXPECT_EQ(f.key, body);
    EXPECT_EQ(f.value, "\"" + body + "\"");
    for (size_t at = 0; at < len; ++at) {
      for (char special : {'\\', '\x01', '\x1f', '\t'}) {
        std::string bad = body;
        bad[at] = special;
        const std::string in_key = R"({"op":"set","key":")" + bad + R"(","value":"v"})";
        EXPECT_FALSE(ParseFastRequest(in_key, &f)) << len << " " << at << " " << int(special);
        const std::string in_value = R"({"op":"set","key":"k","value":")" + bad + R"("})";
        EXPECT_FALSE(ParseFastRequest(in_value, &f)) << len << " " << at << " " << int(special);
      }
      // A quote ends the key early: the rest no longer parses as JSON.
      std::string cut = body;
      cut[at] = '"';
      EXPECT_FALSE(ParseFastRequest(R"({"op":"get","key":")" + cut + R"("})", &f)) << len << " " << at;
      const std::string prefix_key = R"({"op":"get","key":")" + body.substr(0, at) + R"("})";  // f points into it
      ASSERT_TRUE(ParseFastRequest(prefix_key, &f));
      EXPECT_EQ(f.key, body.substr(0, at));
    }
  }
  // Bytes above 0x7f (UTF-8) are plain string bytes.
  ASSERT_TRUE(ParseFastRequest("{\"op\":\"get\",\"key\":\"\xc3\xa9t\xc3\xa9 caf\xc3\xa9 \xe2\x82\xac\"}", &f));
  EXPECT_EQ(f.key, "\xc3\xa9t\xc3\xa9 caf\xc3\xa9 \xe2\x82\xac");
}

// One handler with the fast path, one without, each over its own DB: every
// input, run in the same order through both, gives the same response, and
// the stores end up the same.
class FastRequestHandlerTest : public ::testing::TestWithParam<size_t> {};

TEST_P(FastRequestHandlerTest, AnswersSameAsFullParser) {
  const size_t max_depth = GetParam();
  struct Side {
    std::filesystem::path dir;
    std::unique_ptr<DB> db;
    std::unique_ptr<RequestHandler> handler;
    std::shared_ptr<Session> session = std::make_shared<Session>();

    Side(const std::string& name, bool fast, size_t max_depth) {
      dir = std::filesystem::path(::testing::TempDir()) /
            ("fast_request_test_" + std::to_string(::getpid()) + "_" + name);
      std::filesystem::remove_all(dir);
      EXPECT_TRUE(DB::Open(Options{}, dir.string(), &db).ok());
      HandlerOptions o;
      o.fast_path = fast;
      o.max_depth = max_depth;
      handler = std::make_unique<RequestHandler>(db.get(), o, [](std::function<void()> fn) { fn(); });
    }
    ~Side() {
      handler.reset();
      db.reset();
      std::filesystem::remove_all(dir);
    }
    std::string Call(std::string_view line) {
      auto p = std::make_shared<std::promise<std::string>>();
      auto f = p->get_future();
      handler->Handle(line, session, [p](std::string r) { p->set_value(std::move(r)); });
      EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
      return f.get();
    }
  };
  Side fast("fast" + std::to_string(max_depth), true, max_depth),
      full("full" + std::to_string(max_depth), false, max_depth);
  std::vector<std::string> lines = Inputs();
  // Each again after a set, so gets find values too.
  std::vector<std::string> again = lines;
  lines.push_back(R"({"op":"set","key":"k","value":"v"})");
  lines.insert(lines.end(), again.begin(), again.end());
  for (const std::string& line : lines) {
    std::string a = fast.Call(line), b = full.Call(line);
    // Messages may quote the input; they must match too.
    EXPECT_EQ(a, b) << line.substr(0, 200);
  }
  for (const char* key : {"k", "k/x"}) {
    std::string va, vb;
    Status sa = fast.db->Get(ReadOptions{}, key, &va), sb = full.db->Get(ReadOptions{}, key, &vb);
    EXPECT_EQ(sa.ok(), sb.ok()) << key;
    EXPECT_EQ(va, vb) << key;
  }
}

// 0 and 1: the fast path skips the nesting check only when a flat object
// passes it; 2 and 3 the same for a bulk_set (three deep).
INSTANTIATE_TEST_SUITE_P(MaxDepth, FastRequestHandlerTest, ::testing::Values(64, 3, 2, 1, 0));

TEST(FastRequestTest, AuthStillRequiredOnFastPath) {
  auto dir = std::filesystem::path(::testing::TempDir()) /
             ("fast_request_auth_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::unique_ptr<DB> db;
  ASSERT_TRUE(DB::Open(Options{}, dir.string(), &db).ok());
  {
    HandlerOptions o;
    o.auth_token = "secret";
    RequestHandler h(db.get(), o, [](std::function<void()> fn) { fn(); });
    auto session = std::make_shared<Session>();
    std::string out;
    h.Handle(R"({"op":"get","key":"k"})", session, [&](std::string r) { out = std::move(r); });
    EXPECT_NE(out.find("\"unauthorized\""), std::string::npos) << out;
    h.Handle(R"({"op":"set","key":"k","value":1})", session, [&](std::string r) { out = std::move(r); });
    EXPECT_NE(out.find("\"unauthorized\""), std::string::npos) << out;
  }
  db.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvstore::net
