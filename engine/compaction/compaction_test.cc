// The compaction picker's choices on hand-made versions.
#include "engine/compaction/compaction.h"

#include <gtest/gtest.h>

namespace kvstore {
namespace {

std::shared_ptr<const FileMeta> File(uint64_t number, std::string_view smallest, std::string_view largest,
                                     uint64_t size = 1000) {
  FileMeta f;
  f.number = number;
  f.file_size = size;
  AppendInternalKey(&f.smallest, smallest, number * 10, ValueType::kValue);
  AppendInternalKey(&f.largest, largest, number * 10, ValueType::kValue);
  return std::make_shared<const FileMeta>(std::move(f));
}

std::vector<uint64_t> Numbers(const std::vector<std::shared_ptr<const FileMeta>>& files) {
  std::vector<uint64_t> out;
  for (const auto& f : files) out.push_back(f->number);
  return out;
}

TEST(CompactionPickerTest, L0TakesTheOldestTableAndWhatOverlapsIt) {
  Version v;
  // Newest first: 7 [b..d] overlaps 4 [a..c]; 6 [x..z] and 5 [m..n] overlap nothing.
  v.files[0] = {File(7, "b", "d"), File(6, "x", "z"), File(5, "m", "n"), File(4, "a", "c")};
  v.files[1] = {File(2, "c", "f"), File(3, "p", "q")};
  CompactionOptions options;  // trigger 4: score 1
  CompactPointers pointers;
  auto c = PickCompaction(v, options, &pointers);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->level, 0);
  EXPECT_EQ(Numbers(c->inputs[0]), (std::vector<uint64_t>{7, 4}));
  EXPECT_EQ(Numbers(c->inputs[1]), (std::vector<uint64_t>{2}));  // [c..f] overlaps [a..d]
  EXPECT_FALSE(c->trivial_move);
}

TEST(CompactionPickerTest, NonOverlappingL0TableMovesDownTrivially) {
  Version v;
  v.files[0] = {File(9, "d", "e"), File(8, "c", "c"), File(7, "b", "b"), File(6, "a", "a")};
  CompactionOptions options;
  CompactPointers pointers;
  auto c = PickCompaction(v, options, &pointers);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(Numbers(c->inputs[0]), (std::vector<uint64_t>{6}));
  EXPECT_TRUE(c->inputs[1].empty());
  EXPECT_TRUE(c->trivial_move);
  EXPECT_EQ(c->output_level, 1);
}

TEST(CompactionPickerTest, NothingToDoWithinTargets) {
  Version v;
  v.files[0] = {File(3, "a", "b")};
  v.files[1] = {File(2, "a", "z", 100)};
  CompactionOptions options;
  CompactPointers pointers;
  EXPECT_EQ(PickCompaction(v, options, &pointers), nullptr);
  EXPECT_LT(MaxCompactionScore(v, options), 1.0);
}

TEST(CompactionPickerTest, DeeperLevelsRotateThroughTheirFiles) {
  Version v;
  CompactionOptions options;
  options.level1_bytes = 1000;
  v.files[1] = {File(2, "a", "b", 800), File(3, "c", "d", 800), File(4, "e", "f", 800)};
  CompactPointers pointers;
  std::vector<uint64_t> picked;
  for (int i = 0; i < 4; i++) {
    auto c = PickCompaction(v, options, &pointers);
    ASSERT_NE(c, nullptr);
    ASSERT_EQ(c->level, 1);
    picked.push_back(c->inputs[0][0]->number);
  }
  EXPECT_EQ(picked, (std::vector<uint64_t>{2, 3, 4, 2}));
}

}  // namespace
}  // namespace kvstore
