// Options for opening a DB, and for individual reads and writes.
//
// Thread safety: option structs are plain values, read once by the call that
// receives them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvstore/search.h"

namespace kvstore {

class Env;
class Snapshot;

// Hard limits, enforced on every write (Status::InvalidArgument beyond them).
inline constexpr size_t kMaxKeySize = 64 * 1024;            // bytes
inline constexpr size_t kMaxValueSize = 64 * 1024 * 1024;   // bytes
inline constexpr size_t kMaxBatchSize = 256 * 1024 * 1024;  // encoded bytes

struct Options {
  // Create the directory and an empty store when none exists.
  bool create_if_missing = true;
  // Fail Open when a store already exists at the path.
  bool error_if_exists = false;

  // Bytes the active memtable may hold before it becomes immutable and a new
  // memtable (with its own WAL segment) takes the writes; a background
  // thread then flushes it to a table. At most two memtables exist at once,
  // so memtables use at most twice this.
  size_t memtable_budget = 64 * 1024 * 1024;

  // Bytes of decoded table blocks kept in memory (a sharded LRU).
  size_t block_cache_bytes = 64 * 1024 * 1024;

  // Tables kept open at once (each holds a file descriptor, its index and
  // its filter in memory).
  int max_open_files = 1000;

  // Bloom filter bits per key in every table (about 1% false positives at
  // 10); 0 turns filters off.
  int bloom_bits_per_key = 10;

  // LZ4 per table block, kept only where it saves at least an eighth.
  bool compression = true;

  // On recovery, corruption that is not a torn tail of the newest WAL
  // segment fails Open with Status::Corruption. With this set, replay instead
  // stops at the first bad record and keeps everything before it.
  bool best_effort_recovery = false;

  // The exact-value, full-text and semantic indexes (kvstore/search.h).
  // Off by default.
  SearchOptions search;

  // File system to use; nullptr means the POSIX file system. Tests inject
  // faults through it. Must outlive the DB.
  Env* env = nullptr;
};

struct WriteOptions {
  // Durable before acknowledged: the write is in the WAL and fdatasync'd
  // (shared with concurrent writers by group commit). With false the write
  // reaches the operating system before it is acknowledged, so it survives a
  // crash of the process but not of the machine.
  bool sync = true;
};

struct ReadOptions {
  // Read as of this snapshot (from DB::GetSnapshot); nullptr reads the
  // latest acknowledged state.
  const Snapshot* snapshot = nullptr;
};

}  // namespace kvstore
