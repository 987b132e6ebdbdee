// GroupWake: a waiter returns only once marked done, a wake of other
// generations leaves it asleep, and no wakeup is lost however marks, wakes
// and waits interleave.
#include "engine/sync/group_wake.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace kvstore {
namespace {

TEST(GroupWakeTest, WaitReturnsAtOnceWhenAlreadyDone) {
  GroupWake wake;
  GroupWake::Waiter w;
  w.set_generation(5);
  GroupWake::MarkDone(&w);
  wake.Wait(&w);  // returns without a Wake
  EXPECT_TRUE(wake.WaitUntil(&w, std::chrono::steady_clock::now()));
}

TEST(GroupWakeTest, WaitUntilAPassedDeadlineReportsNotDone) {
  GroupWake wake;
  for (bool alone : {false, true}) {
    GroupWake::Waiter w;
    w.set_wake_alone(alone);
    EXPECT_FALSE(wake.WaitUntil(&w, std::chrono::steady_clock::now() - std::chrono::seconds(1)));
    EXPECT_FALSE(w.done());
  }
}

TEST(GroupWakeTest, AWaiterAloneIsWokenByItsOwnWakeOnly) {
  GroupWake wake;
  GroupWake::Waiter alone, other;
  alone.set_generation(3);
  alone.set_wake_alone(true);
  other.set_generation(3);
  std::atomic<int> returned{0};
  std::thread t([&] {
    wake.Wait(&alone);
    returned = 1;
  });
  GroupWake::MarkDone(&other);
  for (int i = 0; i < 1000; i++) wake.Wake(other.bit());  // its generation's wake is not its own
  EXPECT_EQ(returned.load(), 0);
  GroupWake::MarkDoneAndWake(&alone);
  t.join();
  EXPECT_EQ(returned.load(), 1);
}

// Waiters of generation 1 and 33 share a bit: waking that bit after marking
// only the first done must leave the second waiting (it wakes, finds itself
// not done, and sleeps again), and so must wakes of other generations.
TEST(GroupWakeTest, OnlyWaitersMarkedDoneReturn) {
  GroupWake wake;
  GroupWake::Waiter first, same_bit, other;
  first.set_generation(1);
  same_bit.set_generation(33);
  other.set_generation(2);
  ASSERT_EQ(first.bit(), same_bit.bit());
  std::atomic<int> returned_first{0}, returned_same_bit{0}, returned_other{0};
  std::thread t1([&] {
    wake.Wait(&first);
    returned_first = 1;
  });
  std::thread t2([&] {
    wake.Wait(&same_bit);
    returned_same_bit = 1;
  });
  std::thread t3([&] {
    wake.Wait(&other);
    returned_other = 1;
  });
  const uint32_t bit = first.bit();
  GroupWake::MarkDone(&first);
  wake.Wake(bit);
  t1.join();
  EXPECT_EQ(returned_first.load(), 1);
  for (int i = 0; i < 1000; i++) wake.Wake(bit | other.bit());
  EXPECT_EQ(returned_same_bit.load(), 0);
  EXPECT_EQ(returned_other.load(), 0);
  const uint32_t bits = same_bit.bit() | other.bit();
  GroupWake::MarkDone(&same_bit);
  GroupWake::MarkDone(&other);
  wake.Wake(bits);
  t2.join();
  t3.join();
  EXPECT_EQ(returned_same_bit.load(), 1);
  EXPECT_EQ(returned_other.load(), 1);
}

// Group commit's use: threads join numbered generations, a leader marks a
// whole generation done and wakes it with one call (a waiter alone with its
// own), and each waiter's
// memory is gone (reused by its next round) as soon as it returns. A lost
// wakeup hangs the test; a waiter that returns before it is marked done
// finds its round not yet committed.
TEST(GroupWakeTest, GenerationsOfWaitersNeverMissTheirWake) {
  constexpr int kThreads = 8, kRounds = 2000;
  GroupWake wake;
  std::atomic<uint32_t> committed{0};  // generations fully done
  std::mutex mu;
  std::vector<std::pair<GroupWake::Waiter*, uint32_t>> queue;
  uint32_t open_generation = 1;
  std::atomic<bool> stop{false};
  std::atomic<int> early{0};

  std::thread leader([&] {
    while (!stop.load()) {
      std::vector<std::pair<GroupWake::Waiter*, uint32_t>> group;
      uint32_t generation;
      {
        std::lock_guard<std::mutex> lock(mu);
        group.swap(queue);
        generation = open_generation++;
      }
      if (group.empty()) std::this_thread::yield();
      committed.store(generation);
      uint32_t bits = 0;
      std::vector<GroupWake::Waiter*> marked;
      for (auto& [w, g] : group) {
        if (w->wake_alone()) {
          GroupWake::MarkDoneAndWake(w);
        } else {
          bits |= w->bit();
          marked.push_back(w);
        }
      }
      for (GroupWake::Waiter* w : marked) GroupWake::MarkDone(w);
      if (bits != 0) wake.Wake(bits);
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; t++) {
    writers.emplace_back([&] {
      for (int i = 0; i < kRounds; i++) {
        auto w = std::make_unique<GroupWake::Waiter>();
        uint32_t generation;
        {
          std::lock_guard<std::mutex> lock(mu);
          generation = open_generation;
          w->set_generation(generation);
          w->set_wake_alone(i % 3 == 0);  // the two kinds of waiter side by side
          queue.emplace_back(w.get(), generation);
        }
        wake.Wait(w.get());
        if (committed.load() < generation) early++;
      }
    });
  }
  for (auto& t : writers) t.join();
  stop = true;
  leader.join();
  EXPECT_EQ(early.load(), 0);
}

}  // namespace
}  // namespace kvstore
