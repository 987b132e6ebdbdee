// Internal keys: user key + 8-byte tag, tag = sequence << 8 | type. They
// order by user key ascending, then sequence descending, so the newest
// version of a key comes first. Shared by the memtable, the WAL replay and
// (later) the table format.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "engine/coding/coding.h"
#include "kvstore/status.h"

namespace kvstore {

using SequenceNumber = uint64_t;
// 56 bits: the top byte of the tag holds the type.
inline constexpr SequenceNumber kMaxSequenceNumber = (uint64_t{1} << 56) - 1;

enum class ValueType : uint8_t { kDeletion = 0, kValue = 1 };
// Seeking uses the highest type so that, for equal sequences, the seek key
// sorts before every real entry (tags descend).
inline constexpr ValueType kValueTypeForSeek = ValueType::kValue;

inline uint64_t PackTag(SequenceNumber seq, ValueType t) {
  return (seq << 8) | static_cast<uint8_t>(t);
}
inline SequenceNumber TagSequence(uint64_t tag) { return tag >> 8; }
inline ValueType TagType(uint64_t tag) { return static_cast<ValueType>(tag & 0xff); }

inline std::string_view ExtractUserKey(std::string_view internal_key) {
  return internal_key.substr(0, internal_key.size() - 8);
}
inline uint64_t ExtractTag(std::string_view internal_key) {
  return DecodeFixed64(internal_key.data() + internal_key.size() - 8);
}

inline void AppendInternalKey(std::string* dst, std::string_view user_key, SequenceNumber seq,
                              ValueType t) {
  dst->append(user_key);
  PutFixed64(dst, PackTag(seq, t));
}

inline int CompareUserKeys(std::string_view a, std::string_view b) {
  const size_t n = a.size() < b.size() ? a.size() : b.size();
  if constexpr (std::endian::native == std::endian::little) {
    if (n <= 32) {
      // Short keys (the common case) a word at a time, inline: a memtable
      // insert compares some 30 keys, and the libc memcmp call costs more
      // than the comparison itself. Words loaded big-endian order like bytes.
      size_t i = 0;
      for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        std::memcpy(&x, a.data() + i, 8);
        std::memcpy(&y, b.data() + i, 8);
        if (x != y) return __builtin_bswap64(x) < __builtin_bswap64(y) ? -1 : 1;
      }
      for (; i < n; i++) {
        const auto x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
        if (x != y) return x < y ? -1 : 1;
      }
      return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
    }
  }
  int r = n == 0 ? 0 : std::memcmp(a.data(), b.data(), n);
  if (r != 0) return r;
  return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
}

inline int CompareInternalKeys(std::string_view a, std::string_view b) {
  int r = CompareUserKeys(ExtractUserKey(a), ExtractUserKey(b));
  if (r != 0) return r;
  uint64_t ta = ExtractTag(a), tb = ExtractTag(b);
  return ta > tb ? -1 : ta < tb ? 1 : 0;
}

// An iterator over internal keys in internal-key order. The memtable, tables
// and the merging iterator implement it.
class InternalIterator {
 public:
  virtual ~InternalIterator() = default;
  virtual bool Valid() const = 0;
  virtual void SeekToFirst() = 0;
  // First entry >= target (an internal key).
  virtual void Seek(std::string_view target) = 0;
  virtual void Next() = 0;
  virtual std::string_view key() const = 0;  // the internal key
  virtual std::string_view value() const = 0;
  // Not OK when iteration stopped early on an error (a damaged block, a
  // failed read); the iterator is then not Valid.
  virtual Status status() const { return Status::OK(); }
};

}  // namespace kvstore
