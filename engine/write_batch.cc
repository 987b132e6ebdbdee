#include "kvstore/write_batch.h"

#include "engine/coding/coding.h"
#include "engine/memtable/memtable.h"
#include "engine/write_batch_internal.h"
#include "kvstore/options.h"

namespace kvstore {

namespace {
constexpr char kTypeDeletion = static_cast<char>(ValueType::kDeletion);
constexpr char kTypeValue = static_cast<char>(ValueType::kValue);
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
  while (!input.empty()) {
    char tag = input.front();
    input.remove_prefix(1);
    std::string_view key, value;
    if (tag == kTypeValue) {
      if (!GetLengthPrefixed(&input, &key) || !GetLengthPrefixed(&input, &value)) {
        return Status::Corruption("bad write batch put entry");
      }
      handler->Put(key, value);
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
  void Delete(std::string_view key) override { Check(key); }
  void Check(std::string_view key) {
    if (status.ok() && key.size() > kMaxKeySize) {
      status = Status::InvalidArgument("key of " + std::to_string(key.size()) +
                                       " bytes exceeds the limit of " +
                                       std::to_string(kMaxKeySize));
    }
  }
  Status status;
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

Status WriteBatchInternal::Validate(const WriteBatch& b) {
  if (b.ByteSize() > kMaxBatchSize) {
    return Status::InvalidArgument("write batch of " + std::to_string(b.ByteSize()) +
                                   " bytes exceeds the limit of " + std::to_string(kMaxBatchSize));
  }
  Validator v;
  Status s = b.Iterate(&v);
  return s.ok() ? v.status : s;
}

Status WriteBatchInternal::InsertInto(const WriteBatch& b, MemTable* mem) {
  MemTableInserter inserter(Sequence(b), mem);
  return b.Iterate(&inserter);
}

}  // namespace kvstore
