#include <gtest/gtest.h>

#include "engine/memtable/memtable.h"
#include "engine/write_batch_internal.h"
#include "kvstore/options.h"
#include "kvstore/write_batch.h"

namespace kvstore {
namespace {

class Recorder final : public WriteBatch::Handler {
 public:
  void Put(std::string_view k, std::string_view v) override {
    log += "Put(" + std::string(k) + "," + std::string(v) + ")";
  }
  void Delete(std::string_view k) override { log += "Delete(" + std::string(k) + ")"; }
  std::string log;
};

TEST(WriteBatchTest, EmptyBatch) {
  WriteBatch b;
  EXPECT_EQ(b.Count(), 0u);
  EXPECT_EQ(b.ByteSize(), WriteBatchInternal::kHeaderSize);
  Recorder r;
  EXPECT_TRUE(b.Iterate(&r).ok());
  EXPECT_EQ(r.log, "");
}

TEST(WriteBatchTest, EncodesInOrder) {
  WriteBatch b;
  b.Put("a", "1");
  b.Delete("b");
  b.Put("", "");
  b.Put(std::string("n\0ul", 4), "x");
  EXPECT_EQ(b.Count(), 4u);
  WriteBatchInternal::SetSequence(&b, 100);
  EXPECT_EQ(WriteBatchInternal::Sequence(b), 100u);
  Recorder r;
  ASSERT_TRUE(b.Iterate(&r).ok());
  EXPECT_EQ(r.log, std::string("Put(a,1)Delete(b)Put(,)Put(n\0ul,x)", 34));

  // Round trip through the encoded form, as the WAL does.
  WriteBatch copy;
  ASSERT_TRUE(WriteBatchInternal::SetContents(&copy, WriteBatchInternal::Contents(b)).ok());
  Recorder r2;
  ASSERT_TRUE(copy.Iterate(&r2).ok());
  EXPECT_EQ(r2.log, r.log);
  EXPECT_EQ(WriteBatchInternal::Sequence(copy), 100u);
}

TEST(WriteBatchTest, InsertIntoAssignsConsecutiveSequences) {
  WriteBatch b;
  b.Put("x", "1");
  b.Put("x", "2");
  b.Delete("y");
  WriteBatchInternal::SetSequence(&b, 10);
  MemTable mem(1);
  ASSERT_TRUE(WriteBatchInternal::InsertInto(b, &mem).ok());
  std::string v;
  EXPECT_EQ(mem.Get("x", 10, &v), MemTable::Lookup::kFound);
  EXPECT_EQ(v, "1");
  EXPECT_EQ(mem.Get("x", 11, &v), MemTable::Lookup::kFound);
  EXPECT_EQ(v, "2");
  EXPECT_EQ(mem.Get("y", 12, &v), MemTable::Lookup::kDeleted);
}

TEST(WriteBatchTest, DamagedEncodingIsCorruption) {
  WriteBatch b;
  b.Put("key", "value");
  std::string rep(WriteBatchInternal::Contents(b));
  Recorder r;
  for (size_t cut = WriteBatchInternal::kHeaderSize; cut < rep.size(); cut++) {
    WriteBatch t;
    ASSERT_TRUE(WriteBatchInternal::SetContents(&t, rep.substr(0, cut)).ok());
    EXPECT_TRUE(t.Iterate(&r).IsCorruption()) << cut;
  }
  WriteBatch t;
  EXPECT_TRUE(WriteBatchInternal::SetContents(&t, rep.substr(0, 5)).IsCorruption());
  std::string bad_type = rep;
  bad_type[WriteBatchInternal::kHeaderSize] = 9;
  ASSERT_TRUE(WriteBatchInternal::SetContents(&t, bad_type).ok());
  EXPECT_TRUE(t.Iterate(&r).IsCorruption());
}

TEST(WriteBatchTest, ValidateEnforcesLimits) {
  WriteBatch ok;
  ok.Put(std::string(kMaxKeySize, 'k'), "v");
  EXPECT_TRUE(WriteBatchInternal::Validate(ok).ok());
  WriteBatch big_key;
  big_key.Put(std::string(kMaxKeySize + 1, 'k'), "v");
  EXPECT_TRUE(WriteBatchInternal::Validate(big_key).IsInvalidArgument());
  WriteBatch big_delete;
  big_delete.Delete(std::string(kMaxKeySize + 1, 'k'));
  EXPECT_TRUE(WriteBatchInternal::Validate(big_delete).IsInvalidArgument());
  WriteBatch big_value;
  big_value.Put("k", std::string(kMaxValueSize + 1, 'v'));
  EXPECT_TRUE(WriteBatchInternal::Validate(big_value).IsInvalidArgument());
}

}  // namespace
}  // namespace kvstore
