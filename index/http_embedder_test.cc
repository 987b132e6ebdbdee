// The HTTP embedder against FakeEmbeddingServer on 127.0.0.1: the three
// request shapes, normalisation, batching, the dimension check, the API key,
// retries and timeouts.
#include "index/http_embedder.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>

#include "index/fake_embedding_server.h"
#include "kvstore/embedder.h"

namespace kvstore::index {
namespace {

constexpr int kDim = 32;

double Norm(const std::vector<float>& v) {
  double n = 0;
  for (float x : v) n += static_cast<double>(x) * x;
  return std::sqrt(n);
}

class HttpEmbedderTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.Start().ok()); }

  HttpEmbedderOptions Options(HttpEmbedderApi api) const {
    HttpEmbedderOptions o;
    o.api = api;
    o.url = server_.url();
    o.model = "test-model";
    o.dimension = kDim;
    o.connect_timeout_ms = 1000;
    o.read_timeout_ms = 2000;
    o.backoff_ms = 10;
    return o;
  }

  std::shared_ptr<Embedder> Make(const HttpEmbedderOptions& o) {
    std::shared_ptr<Embedder> e;
    Status s = NewHttpEmbedder(o, &e);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return e;
  }

  // What the server's vectors are before scaling: the hashing embedder's.
  std::vector<float> Reference(std::string_view text) {
    std::vector<std::vector<float>> v;
    EXPECT_TRUE(reference_->Embed({text}, &v).ok());
    return v.at(0);
  }

  FakeEmbeddingServer server_{kDim};
  std::shared_ptr<Embedder> reference_ = NewHashingEmbedder(kDim);
};

TEST_F(HttpEmbedderTest, AllThreeApisGiveTheServersVectorsNormalisedAndInOrder) {
  const std::vector<std::string_view> texts = {"the quick brown fox", "", "lazy dogs sleep", "über café"};
  for (HttpEmbedderApi api : {HttpEmbedderApi::kOpenAI, HttpEmbedderApi::kOllama, HttpEmbedderApi::kTEI}) {
    SCOPED_TRACE(HttpEmbedderApiName(api));
    std::shared_ptr<Embedder> e = Make(Options(api));
    ASSERT_NE(e, nullptr);
    EXPECT_FALSE(e->synchronous());
    EXPECT_EQ(e->dimension(), kDim);
    EXPECT_EQ(e->name(), std::string("http:") + HttpEmbedderApiName(api) + ":test-model:32");
    const uint64_t texts_before = server_.texts();
    std::vector<std::vector<float>> got;
    Status s = e->Embed(texts, &got);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(got.size(), texts.size());
    // The empty text is not sent; it gets zeros.
    EXPECT_EQ(server_.texts() - texts_before, 3u);
    EXPECT_EQ(Norm(got[1]), 0.0);
    for (size_t i : {0u, 2u, 3u}) {
      ASSERT_EQ(got[i].size(), static_cast<size_t>(kDim));
      EXPECT_NEAR(Norm(got[i]), 1.0, 1e-5);
      const std::vector<float> want = Reference(texts[i]);
      for (int d = 0; d < kDim; d++) {
        EXPECT_NEAR(got[i][d], want[d], 1e-5) << "text " << i << " dim " << d;
      }
    }
    if (api != HttpEmbedderApi::kTEI) {
      EXPECT_EQ(server_.last_model(), "test-model");
    }
  }
}

TEST_F(HttpEmbedderTest, SplitsIntoBatches) {
  HttpEmbedderOptions o = Options(HttpEmbedderApi::kOllama);
  o.batch_size = 4;
  std::shared_ptr<Embedder> e = Make(o);
  std::vector<std::string> strings;
  for (int i = 0; i < 10; i++) strings.push_back("text number " + std::to_string(i));
  std::vector<std::string_view> texts(strings.begin(), strings.end());
  std::vector<std::vector<float>> got;
  ASSERT_TRUE(e->Embed(texts, &got).ok());
  ASSERT_EQ(got.size(), 10u);
  EXPECT_EQ(server_.requests(), 3u);
  EXPECT_EQ(server_.max_batch(), 4u);
  for (size_t i = 0; i < texts.size(); i++) {
    const std::vector<float> want = Reference(texts[i]);
    EXPECT_NEAR(got[i][0], want[0], 1e-5);
    EXPECT_NEAR(got[i][kDim - 1], want[kDim - 1], 1e-5);
  }
}

TEST_F(HttpEmbedderTest, WrongDimensionIsAnError) {
  server_.SetExtraDimensions(3);
  for (HttpEmbedderApi api : {HttpEmbedderApi::kOpenAI, HttpEmbedderApi::kOllama, HttpEmbedderApi::kTEI}) {
    std::shared_ptr<Embedder> e = Make(Options(api));
    std::vector<std::vector<float>> got;
    Status s = e->Embed({"hello"}, &got);
    EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
    EXPECT_NE(s.ToString().find("35"), std::string::npos) << s.ToString();
  }
}

TEST_F(HttpEmbedderTest, SendsTheApiKeyFromTheNamedVariable) {
  server_.RequireKey("s3cret");
  ::setenv("KVSTORE_TEST_EMBED_KEY", "s3cret", 1);
  HttpEmbedderOptions o = Options(HttpEmbedderApi::kOpenAI);
  std::shared_ptr<Embedder> without = Make(o);
  std::vector<std::vector<float>> got;
  Status s = without->Embed({"hello"}, &got);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.ToString().find("401"), std::string::npos) << s.ToString();
  EXPECT_EQ(server_.last_authorization(), "");

  o.api_key_env = "KVSTORE_TEST_EMBED_KEY";
  std::shared_ptr<Embedder> with = Make(o);
  s = with->Embed({"hello"}, &got);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(server_.last_authorization(), "Bearer s3cret");

  o.api_key_env = "KVSTORE_TEST_EMBED_KEY_UNSET";
  ::unsetenv("KVSTORE_TEST_EMBED_KEY_UNSET");
  std::shared_ptr<Embedder> e;
  EXPECT_TRUE(NewHttpEmbedder(o, &e).IsInvalidArgument());
}

TEST_F(HttpEmbedderTest, RetriesTransientFailures) {
  HttpEmbedderOptions o = Options(HttpEmbedderApi::kTEI);
  o.retries = 2;
  std::shared_ptr<Embedder> e = Make(o);
  std::vector<std::vector<float>> got;
  server_.FailNext(2, 503);
  Status s = e->Embed({"hello"}, &got);
  EXPECT_TRUE(s.ok()) << s.ToString();
  server_.FailNext(3, 429);
  s = e->Embed({"hello"}, &got);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.ToString().find("429"), std::string::npos) << s.ToString();
  // Not worth retrying: a client error answers at once.
  server_.FailNext(1, 400);
  s = e->Embed({"hello"}, &got);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  s = e->Embed({"hello"}, &got);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_F(HttpEmbedderTest, ReadTimeout) {
  HttpEmbedderOptions o = Options(HttpEmbedderApi::kOpenAI);
  o.read_timeout_ms = 200;
  o.retries = 1;
  std::shared_ptr<Embedder> e = Make(o);
  server_.SetDelayMs(1500);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<float>> got;
  Status s = e->Embed({"hello"}, &got);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  // Two attempts of 200 ms and a 10 ms backoff, far below the server's delay twice.
  EXPECT_LT(took, std::chrono::milliseconds(1400));
  server_.SetDelayMs(0);
}

TEST_F(HttpEmbedderTest, ServiceDownThenBack) {
  HttpEmbedderOptions o = Options(HttpEmbedderApi::kOllama);
  o.retries = 0;
  std::shared_ptr<Embedder> e = Make(o);
  std::vector<std::vector<float>> got;
  ASSERT_TRUE(e->Embed({"warm"}, &got).ok());  // a kept-alive connection now exists
  server_.Stop();
  Status s = e->Embed({"hello"}, &got);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  ASSERT_TRUE(server_.Start().ok());
  o.retries = 1;  // the pooled connection may be stale once
  e = Make(o);
  s = e->Embed({"hello"}, &got);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_F(HttpEmbedderTest, OptionsAreChecked) {
  std::shared_ptr<Embedder> e;
  HttpEmbedderOptions o = Options(HttpEmbedderApi::kOpenAI);
  o.dimension = 0;
  EXPECT_TRUE(NewHttpEmbedder(o, &e).IsInvalidArgument());
  o = Options(HttpEmbedderApi::kOpenAI);
  o.model.clear();
  EXPECT_TRUE(NewHttpEmbedder(o, &e).IsInvalidArgument());
  o.api = HttpEmbedderApi::kTEI;  // TEI serves one model and takes no name
  EXPECT_TRUE(NewHttpEmbedder(o, &e).ok());
  for (const char* bad : {"", "localhost:8080", "ftp://x", "http://", "http://h:0", "http://h:99999", "http://h:8x",
                          "http://u:p@h:1", "http://h/x?y"}) {
    o.url = bad;
    EXPECT_TRUE(NewHttpEmbedder(o, &e).IsInvalidArgument()) << bad;
  }
}

TEST(EmbedderUrlTest, Parses) {
  EmbedderUrl u;
  ASSERT_TRUE(ParseEmbedderUrl("http://127.0.0.1:11434", &u).ok());
  EXPECT_EQ(u.scheme, "http");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 11434);
  EXPECT_EQ(u.base, "");
  ASSERT_TRUE(ParseEmbedderUrl("https://api.openai.com/v1/", &u).ok());
  EXPECT_EQ(u.port, 443);
  EXPECT_EQ(u.base, "/v1");
  ASSERT_TRUE(ParseEmbedderUrl("http://[::1]:8080/tei", &u).ok());
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 8080);
  EXPECT_EQ(u.base, "/tei");
  HttpEmbedderApi api;
  EXPECT_TRUE(ParseHttpEmbedderApi("ollama", &api));
  EXPECT_EQ(api, HttpEmbedderApi::kOllama);
  EXPECT_FALSE(ParseHttpEmbedderApi("hashing", &api));
}

}  // namespace
}  // namespace kvstore::index
