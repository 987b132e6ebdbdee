#include "net/key_locks.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvstore::net {
namespace {

using Mode = KeyLocks::Mode;

TEST(KeyLocksTest, SharedHoldersCoexistExclusiveWaits) {
  KeyLocks locks(16);
  std::vector<KeyLocks::Held> held;
  held.reserve(8);
  std::vector<std::string> events;
  auto grab = [&](const char* name) {
    return [&, name](KeyLocks::Held h, bool immediate) {
      events.push_back(std::string(name) + (immediate ? "+now" : "+later"));
      held.push_back(std::move(h));
    };
  };
  locks.Acquire({"k"}, Mode::kShared, grab("s1"));
  locks.Acquire({"k"}, Mode::kShared, grab("s2"));
  locks.Acquire({"k"}, Mode::kExclusive, grab("x"));
  // A shared request behind a waiting exclusive one waits too (no starvation).
  locks.Acquire({"k"}, Mode::kShared, grab("s3"));
  EXPECT_EQ(events, (std::vector<std::string>{"s1+now", "s2+now"}));
  EXPECT_EQ(locks.waiting(), 2u);
  locks.Release(held[0]);
  EXPECT_EQ(events.size(), 2u);
  locks.Release(held[1]);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2], "x+later");
  locks.Release(held[2]);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[3], "s3+later");
  locks.Release(held[3]);
  EXPECT_EQ(locks.waiting(), 0u);
}

TEST(KeyLocksTest, MultiKeyRequestsTakeStripesInOrder) {
  KeyLocks locks(64);
  std::vector<KeyLocks::Held> held;
  held.reserve(8);
  int granted = 0;
  auto grab = [&](KeyLocks::Held h, bool) {
    ++granted;
    held.push_back(std::move(h));
  };
  locks.Acquire({"a", "b"}, Mode::kExclusive, grab);
  locks.Acquire({"b", "a"}, Mode::kExclusive, grab);  // reverse order: must not deadlock
  locks.Acquire({"a", "a"}, Mode::kExclusive, grab);  // duplicates are one stripe
  EXPECT_EQ(granted, 1);
  locks.Release(held[0]);
  EXPECT_EQ(granted, 2);
  locks.Release(held[1]);
  EXPECT_EQ(granted, 3);
  locks.Release(held[2]);
  EXPECT_EQ(locks.waiting(), 0u);
}

}  // namespace
}  // namespace kvstore::net

namespace kvstore::net {
namespace {

TEST(KeyLocksTryTest, TryAcquireOneTakesOnlyAFreeUncontendedStripe) {
  KeyLocks locks(16);
  KeyLocks::Held a, b, c;
  ASSERT_TRUE(locks.TryAcquireOne("k", KeyLocks::Mode::kShared, &a));
  ASSERT_TRUE(locks.TryAcquireOne("k", KeyLocks::Mode::kShared, &b));
  EXPECT_FALSE(locks.TryAcquireOne("k", KeyLocks::Mode::kExclusive, &c));
  // An exclusive waiter queues; a later shared try must not jump it.
  bool granted = false;
  KeyLocks::Held x;
  locks.Acquire({"k"}, KeyLocks::Mode::kExclusive, [&](KeyLocks::Held h, bool) {
    granted = true;
    x = std::move(h);
  });
  EXPECT_FALSE(granted);
  EXPECT_FALSE(locks.TryAcquireOne("k", KeyLocks::Mode::kShared, &c));
  locks.Release(a);
  EXPECT_FALSE(granted);
  locks.Release(b);
  EXPECT_TRUE(granted);
  EXPECT_FALSE(locks.TryAcquireOne("k", KeyLocks::Mode::kShared, &c));
  locks.Release(x);
  ASSERT_TRUE(locks.TryAcquireOne("k", KeyLocks::Mode::kExclusive, &c));
  locks.Release(c);
  EXPECT_EQ(locks.waiting(), 0u);
}

}  // namespace
}  // namespace kvstore::net
