// WAL segment format constants. This is the on-disk format specified in
// docs/format/wal.md: changing any value here changes the format.
#pragma once

#include <cstdint>
#include <string_view>

namespace kvstore::wal {

// File header: magic (8) | version fixed32 | checksum32 of the first 12 bytes.
inline constexpr std::string_view kMagic = "KVSTWAL\x01";
// Version 2 added put-with-vector batch entries; version 3 added sync marks
// (kSyncMarkType) and zeros written ahead of the records. Older versions are
// read as they are. A writer that writes no sync marks (the manifest) still
// stamps version 2, which older builds read.
inline constexpr uint32_t kFormatVersion = 3;
inline constexpr uint32_t kVersionWithoutSyncMarks = 2;
inline constexpr uint32_t kFirstVersionWithSyncMarks = 3;
inline constexpr uint32_t kOldestReadableVersion = 1;
inline constexpr size_t kFileHeaderSize = 16;

// The body is a sequence of blocks; a physical record never straddles one.
inline constexpr size_t kBlockSize = 32 * 1024;

// Physical record header: checksum32 (4) | length fixed16 (2) | type (1).
// checksum32 = low 32 bits of XXH3_64(payload, seed = type << 16 | length).
inline constexpr size_t kHeaderSize = 4 + 2 + 1;

enum RecordType : uint8_t {
  kZeroType = 0,  // never written; zeros pad the tail of a block and fill the space written ahead
  kFullType = 1,
  kFirstType = 2,
  kMiddleType = 3,
  kLastType = 4,
  // Version 3. Not part of any logical record: the first physical record of
  // a group written after an fdatasync. A payload of kSyncMarkSize bytes is
  // fixed64 = the file offset up to which the segment had been synced; a
  // shorter one only fills the end of a block too small for a full mark.
  kSyncMarkType = 5,
};
inline constexpr size_t kSyncMarkSize = 8;
inline constexpr uint8_t MaxRecordType(uint32_t version) {
  return version >= kFirstVersionWithSyncMarks ? kSyncMarkType : kLastType;
}

inline uint64_t RecordChecksumSeed(uint8_t type, uint32_t length) {
  return (static_cast<uint64_t>(type) << 16) | length;
}

}  // namespace kvstore::wal
