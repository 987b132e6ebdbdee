// DBIter: turns a stream of internal keys into the user's view at one
// sequence number: the newest visible version of each key, deletions hidden.
#pragma once

#include <memory>
#include <string>

#include "engine/coding/internal_key.h"
#include "kvstore/iterator.h"

namespace kvstore {

class DBIter final : public Iterator {
 public:
  // pin keeps alive whatever the internal iterator reads from.
  DBIter(std::unique_ptr<InternalIterator> iter, SequenceNumber sequence, std::shared_ptr<const void> pin)
      : pin_(std::move(pin)), iter_(std::move(iter)), sequence_(sequence) {}

  bool Valid() const override { return valid_; }
  void SeekToFirst() override {
    iter_->SeekToFirst();
    FindNextUserEntry(false);
  }
  void Seek(std::string_view target) override {
    seek_key_.clear();
    AppendInternalKey(&seek_key_, target, sequence_, kValueTypeForSeek);
    iter_->Seek(seek_key_);
    FindNextUserEntry(false);
  }
  void Next() override {
    skip_key_.assign(key());
    iter_->Next();
    FindNextUserEntry(true);
  }
  std::string_view key() const override { return ExtractUserKey(iter_->key()); }
  std::string_view value() const override { return iter_->value(); }
  Status status() const override { return iter_->status(); }

 private:
  // Moves to the first entry that is visible, not shadowed by a newer
  // version, not deleted and (when skipping) past skip_key_.
  void FindNextUserEntry(bool skipping) {
    for (; iter_->Valid(); iter_->Next()) {
      std::string_view ikey = iter_->key();
      uint64_t tag = ExtractTag(ikey);
      if (TagSequence(tag) > sequence_) continue;
      std::string_view user_key = ExtractUserKey(ikey);
      if (skipping && CompareUserKeys(user_key, skip_key_) <= 0) continue;
      if (TagType(tag) == ValueType::kDeletion) {
        skip_key_.assign(user_key);
        skipping = true;
        continue;
      }
      valid_ = true;
      return;
    }
    valid_ = false;
  }

  std::shared_ptr<const void> pin_;  // declared first: outlives iter_
  std::unique_ptr<InternalIterator> iter_;
  const SequenceNumber sequence_;
  bool valid_ = false;
  std::string skip_key_;
  std::string seek_key_;
};

}  // namespace kvstore
