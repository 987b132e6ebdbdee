#include <gtest/gtest.h>

#include <limits>
#include <span>
#include <vector>

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

// A put's vector survives the encoding (unaligned in it) bit for bit;
// handlers that ignore vectors see a plain put, and so does the memtable.
TEST(WriteBatchTest, PutWithVectorRoundTrips) {
  class VectorRecorder final : public WriteBatch::Handler {
   public:
    void Put(std::string_view k, std::string_view v) override { log += "Put(" + std::string(k) + "," + std::string(v) + ")"; }
    void PutWithVector(std::string_view k, std::string_view v, std::span<const float> vec) override {
      log += "PutWithVector(" + std::string(k) + "," + std::string(v) + ")";
      vectors.emplace_back(vec.begin(), vec.end());
    }
    void Delete(std::string_view k) override { log += "Delete(" + std::string(k) + ")"; }
    std::string log;
    std::vector<std::vector<float>> vectors;
  };
  const std::vector<float> v = {1.5f, -0.25f, 3e-8f, 42.0f, -0.0f};
  WriteBatch b;
  b.Put("a", "1");
  b.PutWithVector("k", "val", v);  // 1 + 2 + 4 bytes before the floats: unaligned
  b.Delete("d");
  EXPECT_EQ(b.Count(), 3u);
  WriteBatch copy;
  ASSERT_TRUE(WriteBatchInternal::SetContents(&copy, WriteBatchInternal::Contents(b)).ok());
  VectorRecorder r;
  ASSERT_TRUE(copy.Iterate(&r).ok());
  EXPECT_EQ(r.log, "Put(a,1)PutWithVector(k,val)Delete(d)");
  ASSERT_EQ(r.vectors.size(), 1u);
  EXPECT_EQ(r.vectors[0], v);
  Recorder plain;
  ASSERT_TRUE(copy.Iterate(&plain).ok());
  EXPECT_EQ(plain.log, "Put(a,1)Put(k,val)Delete(d)");

  WriteBatchInternal::SetSequence(&copy, 7);
  MemTable mem(1);
  ASSERT_TRUE(WriteBatchInternal::InsertInto(copy, &mem).ok());
  std::string value;
  EXPECT_EQ(mem.Get("k", 8, &value), MemTable::Lookup::kFound);
  EXPECT_EQ(value, "val");
  EXPECT_EQ(mem.Get("d", 9, &value), MemTable::Lookup::kDeleted);

  // Every truncation of the vector entry is Corruption, never a short read.
  std::string rep(WriteBatchInternal::Contents(b));
  for (size_t cut = WriteBatchInternal::kHeaderSize + 5; cut < rep.size() - 3; cut++) {
    WriteBatch t;
    ASSERT_TRUE(WriteBatchInternal::SetContents(&t, rep.substr(0, cut)).ok());
    EXPECT_TRUE(t.Iterate(&plain).IsCorruption()) << cut;
  }
}

TEST(WriteBatchTest, ValidateChecksVectors) {
  auto validate = [](std::vector<float> v, size_t dimension) {
    WriteBatch b;
    b.PutWithVector("k", "v", v);
    return WriteBatchInternal::Validate(b, dimension);
  };
  EXPECT_TRUE(validate({1, 2, 3}, 3).ok());
  EXPECT_TRUE(validate({1, 2, 3}, 4).IsInvalidArgument());
  EXPECT_TRUE(validate({1, 2, 3}, 0).IsInvalidArgument());  // no semantic index
  EXPECT_TRUE(validate({0, 0, 0}, 3).IsInvalidArgument());
  EXPECT_TRUE(validate({}, 0).IsInvalidArgument());
  EXPECT_TRUE(validate({1, std::numeric_limits<float>::quiet_NaN(), 3}, 3).IsInvalidArgument());
  EXPECT_TRUE(validate({1, std::numeric_limits<float>::infinity(), 3}, 3).IsInvalidArgument());
  EXPECT_TRUE(validate(std::vector<float>(WriteBatch::kMaxVectorDimension + 1, 1.0f),
                       WriteBatch::kMaxVectorDimension + 1).IsInvalidArgument());
}

TEST(WriteBatchTest, ValidateEnforcesLimits) {
  WriteBatch ok;
  ok.Put(std::string(kMaxKeySize, 'k'), "v");
  EXPECT_TRUE(WriteBatchInternal::Validate(ok, 0).ok());
  WriteBatch big_key;
  big_key.Put(std::string(kMaxKeySize + 1, 'k'), "v");
  EXPECT_TRUE(WriteBatchInternal::Validate(big_key, 0).IsInvalidArgument());
  WriteBatch big_delete;
  big_delete.Delete(std::string(kMaxKeySize + 1, 'k'));
  EXPECT_TRUE(WriteBatchInternal::Validate(big_delete, 0).IsInvalidArgument());
  WriteBatch big_value;
  big_value.Put("k", std::string(kMaxValueSize + 1, 'v'));
  EXPECT_TRUE(WriteBatchInternal::Validate(big_value, 0).IsInvalidArgument());
}

}  // namespace
}  // namespace kvstore
