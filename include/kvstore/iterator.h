// Iterator: an ordered scan over the store as of one snapshot.
//
// Keys come in ascending bytewise order. Prefix and range scans are a Seek
// to the first key wanted, then Next while the key is still in range.
//
// Thread safety: an iterator is used by one thread at a time. It pins the
// data it reads, so writes, flushes and compactions that happen while it is
// open never change what it returns. Delete every iterator before the DB.
#pragma once

#include <string_view>

#include "kvstore/status.h"

namespace kvstore {

class Iterator {
 public:
  Iterator() = default;
  Iterator(const Iterator&) = delete;
  Iterator& operator=(const Iterator&) = delete;
  virtual ~Iterator() = default;

  // True while positioned at an entry.
  virtual bool Valid() const = 0;
  virtual void SeekToFirst() = 0;
  // Positions at the first key >= target.
  virtual void Seek(std::string_view target) = 0;
  // Requires Valid().
  virtual void Next() = 0;

  // Valid until the iterator moves. Requires Valid().
  virtual std::string_view key() const = 0;
  virtual std::string_view value() const = 0;

  // Not OK when the scan stopped early because of an error.
  virtual Status status() const = 0;
};

}  // namespace kvstore
