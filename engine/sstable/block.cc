#include "engine/sstable/block.h"

#include "engine/coding/coding.h"

namespace kvstore::sstable {

BlockIterator::BlockIterator(std::shared_ptr<const BlockContents> contents, KeyCompare compare)
    : contents_(std::move(contents)), compare_(compare) {
  Init(*contents_);
}

BlockIterator::BlockIterator(const BlockContents* contents, KeyCompare compare) : compare_(compare) {
  Init(*contents);
}

void BlockIterator::Init(const BlockContents& contents) {
  const std::string_view d = contents.data;
  data_ = d.data();
  if (d.size() < 4) {
    Corrupt();
    return;
  }
  num_restarts_ = DecodeFixed32(d.data() + d.size() - 4);
  if (num_restarts_ == 0 || num_restarts_ > (d.size() - 4) / 4) {
    Corrupt();
    return;
  }
  restarts_offset_ = static_cast<uint32_t>(d.size() - 4 - 4 * static_cast<size_t>(num_restarts_));
  current_ = next_ = restarts_offset_;  // not valid until positioned
}

void BlockIterator::Corrupt() {
  if (status_.ok()) status_ = Status::Corruption("bad entry in a table block");
  current_ = next_ = restarts_offset_;
  key_view_ = {};
  value_ = {};
}

uint32_t BlockIterator::RestartPoint(uint32_t index) const {
  return DecodeFixed32(data_ + restarts_offset_ + 4 * static_cast<size_t>(index));
}

void BlockIterator::SeekToRestart(uint32_t index) {
  key_view_ = {};
  next_ = RestartPoint(index);
  if (next_ > restarts_offset_) Corrupt();
}

bool BlockIterator::ParseNextEntry() {
  current_ = next_;
  if (current_ >= restarts_offset_) return false;
  const char* p = data_ + current_;
  const char* limit = data_ + restarts_offset_;
  uint32_t shared, unshared, value_size;
  if ((p = GetVarint32Ptr(p, limit, &shared)) == nullptr ||
      (p = GetVarint32Ptr(p, limit, &unshared)) == nullptr ||
      (p = GetVarint32Ptr(p, limit, &value_size)) == nullptr ||
      static_cast<size_t>(limit - p) < static_cast<size_t>(unshared) + value_size || key_view_.size() < shared) {
    Corrupt();
    return false;
  }
  if (shared == 0) {
    key_view_ = std::string_view(p, unshared);
  } else {
    if (key_view_.data() == key_.data()) {
      key_.resize(shared);
    } else {
      key_.assign(key_view_.data(), shared);  // the previous key is in the block
    }
    key_.append(p, unshared);
    key_view_ = key_;
  }
  if (key_view_.size() < kMinKeySize) {
    Corrupt();
    return false;
  }
  value_ = std::string_view(p + unshared, value_size);
  next_ = static_cast<uint32_t>((p + unshared + value_size) - data_);
  return true;
}

void BlockIterator::SeekToFirst() {
  if (!status_.ok()) return;
  SeekToRestart(0);
  ParseNextEntry();
}

void BlockIterator::Next() {
  ParseNextEntry();
}

void BlockIterator::Seek(std::string_view target) {
  if (!status_.ok()) return;
  // Binary search for the last restart point whose key is < target.
  uint32_t left = 0, right = num_restarts_ - 1;
  while (left < right) {
    uint32_t mid = (left + right + 1) / 2;
    uint32_t offset = RestartPoint(mid);
    const char* p = data_ + offset;
    const char* limit = data_ + restarts_offset_;
    uint32_t shared, unshared, value_size;
    if (offset >= restarts_offset_ || (p = GetVarint32Ptr(p, limit, &shared)) == nullptr ||
        (p = GetVarint32Ptr(p, limit, &unshared)) == nullptr ||
        (p = GetVarint32Ptr(p, limit, &value_size)) == nullptr || shared != 0 ||
        static_cast<size_t>(limit - p) < unshared || unshared < kMinKeySize) {
      Corrupt();
      return;
    }
    if (compare_(std::string_view(p, unshared), target) < 0) {
      left = mid;
    } else {
      right = mid - 1;
    }
  }
  SeekToRestart(left);
  while (status_.ok() && ParseNextEntry()) {
    if (compare_(key_view_, target) >= 0) return;
  }
}

}  // namespace kvstore::sstable
