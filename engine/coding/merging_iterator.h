// MergingIterator: the union of several internal iterators, in internal-key
// order. With a handful of children (memtables now, table levels later) a
// linear scan for the smallest beats a heap.
#pragma once

#include <memory>
#include <vector>

#include "engine/coding/internal_key.h"

namespace kvstore {

class MergingIterator final : public InternalIterator {
 public:
  explicit MergingIterator(std::vector<std::unique_ptr<InternalIterator>> children)
      : children_(std::move(children)) {}

  bool Valid() const override { return current_ != nullptr; }
  void SeekToFirst() override {
    for (auto& c : children_) c->SeekToFirst();
    FindSmallest();
  }
  void Seek(std::string_view target) override {
    for (auto& c : children_) c->Seek(target);
    FindSmallest();
  }
  void Next() override {
    current_->Next();
    FindSmallest();
  }
  std::string_view key() const override { return current_->key(); }
  std::string_view value() const override { return current_->value(); }
  Status status() const override { return status_; }

 private:
  void FindSmallest() {
    current_ = nullptr;
    std::string_view smallest;
    for (auto& c : children_) {
      if (!c->Valid()) {
        // A child that stopped on an error stops the merge: going on would
        // silently skip its keys.
        if (Status s = c->status(); !s.ok()) {
          status_ = s;
          current_ = nullptr;
          return;
        }
        continue;
      }
      std::string_view k = c->key();
      if (current_ == nullptr || CompareInternalKeys(k, smallest) < 0) {
        current_ = c.get();
        smallest = k;
      }
    }
  }

  std::vector<std::unique_ptr<InternalIterator>> children_;
  InternalIterator* current_ = nullptr;
  Status status_;
};

}  // namespace kvstore
