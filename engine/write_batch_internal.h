// The parts of WriteBatch that only the engine sees. The encoding (the WAL
// record payload, docs/format/wal.md):
//   sequence fixed64 | count fixed32 | entry*
//   entry := kTypeValue varstring(key) varstring(value) | kTypeDeletion varstring(key)
//          | 0x02 varstring(key) varstring(value) varint32(dimension) float32{dimension}
#pragma once

#include <string_view>

#include "engine/coding/internal_key.h"
#include "kvstore/write_batch.h"

namespace kvstore {

class MemTable;

class WriteBatchInternal {
 public:
  static constexpr size_t kHeaderSize = 12;

  static SequenceNumber Sequence(const WriteBatch& b);
  static void SetSequence(WriteBatch* b, SequenceNumber seq);
  static uint32_t Count(const WriteBatch& b) { return b.Count(); }
  static std::string_view Contents(const WriteBatch& b) { return b.rep_; }
  // Replaces the batch with an encoded one (from the WAL); checks its shape.
  static Status SetContents(WriteBatch* b, std::string_view contents);
  // Checks that every entry respects the size limits, and that every vector
  // is usable and has vector_dimension dimensions (0: the store keeps no
  // semantic index, so no entry may carry a vector).
  static Status Validate(const WriteBatch& b, size_t vector_dimension);
  // Adds the entries to mem with consecutive sequence numbers starting at the
  // batch's sequence.
  static Status InsertInto(const WriteBatch& b, MemTable* mem);
};

}  // namespace kvstore
