#include "engine/sstable/bloom.h"

#include <algorithm>
#include <cmath>

#include "engine/coding/checksum.h"
#include "engine/coding/coding.h"

namespace kvstore::sstable {

namespace {
constexpr size_t kLineBytes = 64;
constexpr uint32_t kLineBits = kLineBytes * 8;

inline uint32_t LineFor(uint64_t hash, uint32_t num_lines) {
  // Multiply-shift maps the high half of the hash onto [0, num_lines).
  return static_cast<uint32_t>(((hash >> 32) * num_lines) >> 32);
}
// The probes walk a multiplicative sequence over the low half of the hash;
// each takes the top 9 bits as a bit position within the line.
inline uint32_t NextProbe(uint32_t h) { return h * 0x9E3779B9u; }
}  // namespace

void BloomBuilder::Add(std::string_view user_key) {
  uint64_t h = Checksum64(user_key);
  if (hashes_.empty() || hashes_.back() != h) hashes_.push_back(h);
}

std::string BloomBuilder::Finish() {
  const uint64_t bits = std::max<uint64_t>(hashes_.size() * static_cast<uint64_t>(bits_per_key_), kLineBits);
  const uint32_t num_lines = static_cast<uint32_t>((bits + kLineBits - 1) / kLineBits);
  // ln 2 * bits per key is optimal for a classic filter; a line-local one
  // does a little better with slightly fewer probes.
  const int probes = std::clamp(static_cast<int>(std::lround(bits_per_key_ * 0.62)), 1, 12);
  std::string out(static_cast<size_t>(num_lines) * kLineBytes, '\0');
  for (uint64_t h : hashes_) {
    char* line = out.data() + static_cast<size_t>(LineFor(h, num_lines)) * kLineBytes;
    uint32_t x = static_cast<uint32_t>(h);
    for (int i = 0; i < probes; i++) {
      uint32_t bit = x >> 23;
      line[bit >> 3] = static_cast<char>(line[bit >> 3] | (1 << (bit & 7)));
      x = NextProbe(x);
    }
  }
  out.push_back(static_cast<char>(probes));
  out.append(3, '\0');
  PutFixed32(&out, num_lines);
  hashes_.clear();
  return out;
}

bool BloomMayContain(std::string_view filter, std::string_view user_key) {
  if (filter.size() < 8) return true;
  const uint32_t num_lines = DecodeFixed32(filter.data() + filter.size() - 4);
  const int probes = static_cast<uint8_t>(filter[filter.size() - 8]);
  if (num_lines == 0 || probes == 0 || probes > 30 ||
      static_cast<uint64_t>(num_lines) * kLineBytes != filter.size() - 8) {
    return true;
  }
  const uint64_t h = Checksum64(user_key);
  const char* line = filter.data() + static_cast<size_t>(LineFor(h, num_lines)) * kLineBytes;
  uint32_t x = static_cast<uint32_t>(h);
  for (int i = 0; i < probes; i++) {
    uint32_t bit = x >> 23;
    if ((line[bit >> 3] & (1 << (bit & 7))) == 0) return false;
    x = NextProbe(x);
  }
  return true;
}

}  // namespace kvstore::sstable
