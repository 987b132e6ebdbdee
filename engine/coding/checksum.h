// Checksums for on-disk records and blocks: XXH3-64, inlined.
#pragma once

#include <cstdint>
#include <string_view>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kvstore {

inline uint64_t Checksum64(std::string_view data, uint64_t seed = 0) {
  return XXH3_64bits_withSeed(data.data(), data.size(), seed);
}

// The low 32 bits, for formats that store a 4-byte checksum.
inline uint32_t Checksum32(std::string_view data, uint64_t seed = 0) {
  return static_cast<uint32_t>(Checksum64(data, seed));
}

}  // namespace kvstore
