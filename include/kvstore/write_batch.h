// WriteBatch: a list of puts and deletes applied atomically by DB::Write.
// All of a batch becomes visible at once, or none of it; after a crash it is
// wholly present or wholly absent.
//
// Thread safety: a batch is not synchronized; build it on one thread, then
// hand it to DB::Write or DB::WriteAsync.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kvstore/status.h"

namespace kvstore {

class WriteBatch {
 public:
  WriteBatch();

  void Put(std::string_view key, std::string_view value);
  void Delete(std::string_view key);
  void Clear();

  // Number of puts and deletes.
  uint32_t Count() const;
  // Encoded size in bytes; compare with kMaxBatchSize.
  size_t ByteSize() const { return rep_.size(); }

  // Calls the handler for each entry in the order they were added.
  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void Put(std::string_view key, std::string_view value) = 0;
    virtual void Delete(std::string_view key) = 0;
  };
  Status Iterate(Handler* handler) const;

 private:
  friend class WriteBatchInternal;
  // The encoding is the WAL record payload; see docs/format/wal.md.
  std::string rep_;
};

}  // namespace kvstore
