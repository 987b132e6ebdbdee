// WriteBatch: a list of puts and deletes applied atomically by DB::Write.
// All of a batch becomes visible at once, or none of it; after a crash it is
// wholly present or wholly absent.
//
// Thread safety: a batch is not synchronized; build it on one thread, then
// hand it to DB::Write or DB::WriteAsync.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "kvstore/status.h"

namespace kvstore {

class WriteBatch {
 public:
  WriteBatch();

  void Put(std::string_view key, std::string_view value);
  // A put whose value the semantic index finds by this vector instead of the
  // one the store's embedder would compute from the value: for those who
  // embed on their side. The vector must have the index's dimension (a
  // store without a semantic index, or a vector of another dimension, fails
  // the write with invalid_argument); it is kept, normalised, in the WAL and
  // the index segments, never in the value. Up to kMaxVectorDimension
  // finite floats, not all zero.
  void PutWithVector(std::string_view key, std::string_view value, std::span<const float> vector);
  void Delete(std::string_view key);
  void Clear();

  static constexpr size_t kMaxVectorDimension = 4096;

  // Number of puts and deletes.
  uint32_t Count() const;
  // Encoded size in bytes; compare with kMaxBatchSize.
  size_t ByteSize() const { return rep_.size(); }

  // Calls the handler for each entry in the order they were added.
  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void Put(std::string_view key, std::string_view value) = 0;
    // A PutWithVector; handlers that do not care about vectors see a Put.
    virtual void PutWithVector(std::string_view key, std::string_view value, std::span<const float> vector) {
      (void)vector;
      Put(key, value);
    }
    virtual void Delete(std::string_view key) = 0;
  };
  Status Iterate(Handler* handler) const;

 private:
  friend class WriteBatchInternal;
  // The encoding is the WAL record payload; see docs/format/wal.md.
  std::string rep_;
};

}  // namespace kvstore
