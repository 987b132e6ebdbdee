#include "net/json_guard.h"

#include <gtest/gtest.h>

#include <string>

namespace kvstore::net {
namespace {

TEST(JsonGuardTest, Utf8AtEveryOffsetOfTheWordAtATimeScan) {
  for (size_t at = 0; at <= 24; ++at) {
    std::string ascii(24, 'a');
    SCOPED_TRACE(at);
    EXPECT_TRUE(IsValidUtf8(ascii.substr(0, at)));
    EXPECT_FALSE(IsValidUtf8(std::string(ascii).insert(at, "\xff")));
    EXPECT_FALSE(IsValidUtf8(std::string(ascii).insert(at, "\x80")));
    EXPECT_FALSE(IsValidUtf8(std::string(ascii).insert(at, "\xed\xa0\x80")));
    EXPECT_FALSE(IsValidUtf8(ascii.substr(0, at) + "\xe2\x82"));  // truncated at the end
    EXPECT_TRUE(IsValidUtf8(std::string(ascii).insert(at, "\xc3\xa9")));
    EXPECT_TRUE(IsValidUtf8(std::string(ascii).insert(at, "\xf0\x9f\x98\x80")));
  }
}

TEST(JsonGuardTest, Utf8) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));                // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));            // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));        // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));    // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x28\xa1"));        // bad continuation
}

TEST(JsonGuardTest, NestingCountsOnlyOutsideStrings) {
  EXPECT_TRUE(NestingWithin("{\"a\":[[1]]}", 3));
  EXPECT_FALSE(NestingWithin("{\"a\":[[[1]]]}", 3));
  EXPECT_TRUE(NestingWithin("{\"a\":\"[[[[[[[[\"}", 1));
  EXPECT_TRUE(NestingWithin("{\"a\":\"\\\"[[[[\"}", 1));  // escaped quote stays in the string
  EXPECT_TRUE(NestingWithin("[][][][]", 1));              // siblings do not add up
  EXPECT_FALSE(NestingWithin(std::string(100000, '['), 64));
}

}  // namespace
}  // namespace kvstore::net
