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

// Whether a stored checksum matches the one computed over the bytes. Fuzz
// builds (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, the libFuzzer
// convention) accept every checksum, so that mutated inputs reach the parsers
// behind the checksums instead of all stopping at them.
inline bool ChecksumMatches(uint32_t stored, uint32_t computed) {
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  (void)stored;
  (void)computed;
  return true;
#else
  return stored == computed;
#endif
}

}  // namespace kvstore
