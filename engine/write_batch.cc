#include "kvstore/write_batch.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "engine/coding/coding.h"
#include "engine/memtable/memtable.h"
#include "engine/write_batch_internal.h"
#include "kvstore/options.h"

namespace kvstore {

namespace {
constexpr char kTypeDeletion = static_cast<char>(ValueType::kDeletion);
constexpr char kTypeValue = static_cast<char>(ValueType::kValue);
// A put carrying a client-supplied vector for the semantic index (WAL
// format version 2). Batch-only: the memtable and tables see a kValue.
constexpr char kTypeValueWithVector = 0x02;
}  // namespace

WriteBatch::WriteBatch() { rep_.resize(WriteBatchInternal::kHeaderSize); }

void WriteBatch::Clear() {
  rep_.clear();
  rep_.resize(WriteBatchInternal::kHeaderSize);
}

uint32_t WriteBatch::Count() const { return DecodeFixed32(rep_.data() + 8); }

void WriteBatch::Put(std::string_view key, std::string_view value) {
  EncodeFixed32(rep_.data() + 8, Count() + 1);
  rep_.push_back(kTypeValue);
  PutLengthPrefixed(&rep_, key);
  PutLengthPrefixed(&rep_, value);
}

void WriteBatch::PutWithVector(std::string_view key, std::string_view value, std::span<const float> vector) {
  EncodeFixed32(rep_.data() + 8, Count() + 1);
  rep_.push_back(kTypeValueWithVector);
  PutLengthPrefixed(&rep_, key);
  PutLengthPrefixed(&rep_, value);
  PutVarint32(&rep_, static_cast<uint32_t>(vector.size()));
  rep_.append(reinterpret_cast<const char*>(vector.data()), vector.size_bytes());  // little-endian floats
}

void WriteBatch::Delete(std::string_view key) {
  EncodeFixed32(rep_.data() + 8, Count() + 1);
  rep_.push_back(kTypeDeletion);
  PutLengthPrefixed(&rep_, key);
}

Status WriteBatch::Iterate(Handler* handler) const {
  std::string_view input(rep_);
  if (input.size() < WriteBatchInternal::kHeaderSize) {
    return Status::Corruption("write batch shorter than its header");
  }
  input.remove_prefix(WriteBatchInternal::kHeaderSize);
  uint32_t found = 0;
  std::vector<float> vector;  // the batch's bytes need not be aligned for floats
  while (!input.empty()) {
    char tag = input.front();
    input.remove_prefix(1);
    std::string_view key, value;
    if (tag == kTypeValue) {
      if (!GetLengthPrefixed(&input, &key) || !GetLengthPrefixed(&input, &value)) {
        return Status::Corruption("bad write batch put entry");
      }
      handler->Put(key, value);
    } else if (tag == kTypeValueWithVector) {
      uint32_t dimension = 0;
      if (!GetLengthPrefixed(&input, &key) || !GetLengthPrefixed(&input, &value) || !GetVarint32(&input, &dimension) ||
          input.size() / sizeof(float) < dimension) {
        return Status::Corruption("bad write batch put-with-vector entry");
      }
      vector.resize(dimension);
      if (dimension > 0) std::memcpy(vector.data(), input.data(), size_t{dimension} * sizeof(float));
      input.remove_prefix(size_t{dimension} * sizeof(float));
      handler->PutWithVector(key, value, vector);
    } else if (tag == kTypeDeletion) {
      if (!GetLengthPrefixed(&input, &key)) return Status::Corruption("bad write batch delete entry");
      handler->Delete(key);
    } else {
      return Status::Corruption("unknown write batch entry type");
    }
    found++;
  }
  if (found != Count()) return Status::Corruption("write batch count does not match its entries");
  return Status::OK();
}

SequenceNumber WriteBatchInternal::Sequence(const WriteBatch& b) {
  return DecodeFixed64(b.rep_.data());
}

void WriteBatchInternal::SetSequence(WriteBatch* b, SequenceNumber seq) {
  EncodeFixed64(b->rep_.data(), seq);
}

Status WriteBatchInternal::SetContents(WriteBatch* b, std::string_view contents) {
  if (contents.size() < kHeaderSize) return Status::Corruption("write batch shorter than its header");
  b->rep_.assign(contents);
  return Status::OK();
}

namespace {
class Validator final : public WriteBatch::Handler {
 public:
  void Put(std::string_view key, std::string_view value) override {
    Check(key);
    if (status.ok() && value.size() > kMaxValueSize) {
      status = Status::InvalidArgument("value of " + std::to_string(value.size()) +
                                       " bytes exceeds the limit of " +
                                       std::to_string(kMaxValueSize));
    }
  }
  void PutWithVector(std::string_view key, std::string_view value, std::span<const float> vector) override {
    Put(key, value);
    if (!status.ok()) return;
    if (vector.empty() || vector.size() > WriteBatch::kMaxVectorDimension) {
      status = Status::InvalidArgument("a put's vector has " + std::to_string(vector.size()) +
                                       " dimensions; 1 to " + std::to_string(WriteBatch::kMaxVectorDimension) +
                                       " are allowed");
      return;
    }
    double norm = 0;
    for (float x : vector) {
      if (!std::isfinite(x)) {
        status = Status::InvalidArgument("a put's vector holds a NaN or infinity");
        return;
      }
      norm += static_cast<double>(x) * x;
    }
    if (norm == 0) {
      status = Status::InvalidArgument("a put's vector is all zeros");
    } else if (vector_dimension == 0) {
      status = Status::InvalidArgument("a put carries a vector, but the store keeps no semantic index");
    } else if (vector.size() != vector_dimension) {
      status = Status::InvalidArgument("a put's vector has " + std::to_string(vector.size()) +
                                       " dimensions; the semantic index has " + std::to_string(vector_dimension));
    }
  }
  void Delete(std::string_view key) override { Check(key); }
  void Check(std::string_view key) {
    if (status.ok() && key.size() > kMaxKeySize) {
      status = Status::InvalidArgument("key of " + std::to_string(key.size()) +
                                       " bytes exceeds the limit of " +
                                       std::to_string(kMaxKeySize));
    }
  }
  Status status;
  size_t vector_dimension = 0;  // the semantic index's; 0: none
};

class MemTableInserter final : public WriteBatch::Handler {
 public:
  MemTableInserter(SequenceNumber seq, MemTable* mem) : seq_(seq), mem_(mem) {}
  void Put(std::string_view key, std::string_view value) override {
    mem_->Add(seq_++, ValueType::kValue, key, value);
  }
  void Delete(std::string_view key) override { mem_->Add(seq_++, ValueType::kDeletion, key, {}); }

 private:
  SequenceNumber seq_;
  MemTable* mem_;
};
}  // namespace

Status WriteBatchInternal::Validate(const WriteBatch& b, size_t vector_dimension) {
  if (b.ByteSize() > kMaxBatchSize) {
    return Status::InvalidArgument("write batch of " + std::to_string(b.ByteSize()) +
                                   " bytes exceeds the limit of " + std::to_string(kMaxBatchSize));
  }
  Validator v;
  v.vector_dimension = vector_dimension;
  Status s = b.Iterate(&v);
  return s.ok() ? v.status : s;
}

Status WriteBatchInternal::InsertInto(const WriteBatch& b, MemTable* mem) {
  MemTableInserter inserter(Sequence(b), mem);
  return b.Iterate(&inserter);
}

}  // namespace kvstore
