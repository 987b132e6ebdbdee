#include "net/framer.h"

#include <gtest/gtest.h>

namespace kvstore::net {
namespace {

TEST(LineFramerTest, SplitsLinesAcrossArbitraryChunks) {
  LineFramer f(100);
  std::string line;
  f.Append("{\"a\":1}\n{\"b\"");
  ASSERT_EQ(f.Next(&line), LineFramer::Result::kLine);
  EXPECT_EQ(line, "{\"a\":1}");
  EXPECT_EQ(f.Next(&line), LineFramer::Result::kNeedMore);
  f.Append(":2}\r\n\n");
  ASSERT_EQ(f.Next(&line), LineFramer::Result::kLine);
  EXPECT_EQ(line, "{\"b\":2}");  // the CR is dropped
  ASSERT_EQ(f.Next(&line), LineFramer::Result::kLine);
  EXPECT_EQ(line, "");
  EXPECT_EQ(f.Next(&line), LineFramer::Result::kNeedMore);
  EXPECT_EQ(f.buffered(), 0u);
}

TEST(LineFramerTest, ByteAtATime) {
  LineFramer f(100);
  std::string input = "one\ntwo\nthree\n", line;
  std::vector<std::string> got;
  for (char c : input) {
    f.Append(std::string_view(&c, 1));
    while (f.Next(&line) == LineFramer::Result::kLine) got.push_back(line);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two", "three"}));
}

TEST(LineFramerTest, LineAtTheLimitPasses) {
  LineFramer f(5);
  std::string line;
  f.Append("12345\n");
  ASSERT_EQ(f.Next(&line), LineFramer::Result::kLine);
  EXPECT_EQ(line, "12345");
}

TEST(LineFramerTest, OverlongLineWithoutNewlineIsTooLargeAndStaysSo) {
  LineFramer f(5);
  std::string line;
  f.Append("123");
  EXPECT_EQ(f.Next(&line), LineFramer::Result::kNeedMore);
  f.Append("456");
  EXPECT_EQ(f.Next(&line), LineFramer::Result::kTooLarge);
  f.Append("\nok\n");
  EXPECT_EQ(f.Next(&line), LineFramer::Result::kTooLarge);
}

TEST(LineFramerTest, OverlongCompleteLineIsTooLarge) {
  LineFramer f(5);
  std::string line;
  f.Append("ok\n1234567\nafter\n");
  ASSERT_EQ(f.Next(&line), LineFramer::Result::kLine);
  EXPECT_EQ(line, "ok");
  EXPECT_EQ(f.Next(&line), LineFramer::Result::kTooLarge);
}

}  // namespace
}  // namespace kvstore::net
