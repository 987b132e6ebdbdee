// Leveled compaction: choosing what to compact (a picker by score), and
// running it (merge the inputs, drop what no reader can see, write tables
// split at a target size). Also BuildTable, which a flush uses to write a
// memtable out as one table.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/coding/internal_key.h"
#include "engine/sstable/table_builder.h"
#include "engine/version/table_cache.h"
#include "engine/version/version_set.h"
#include "kvstore/env.h"

namespace kvstore {

struct CompactionOptions {
  int l0_compaction_trigger = 4;      // L0 files that make L0's score 1
  uint64_t level1_bytes = 256 << 20;  // L1's target size; each deeper level is 10x
  uint64_t target_file_size = 64 << 20;
  sstable::TableOptions table;
};

uint64_t MaxBytesForLevel(const CompactionOptions& options, int level);

struct Compaction {
  int level = 0;  // inputs[0] from level, inputs[1] from level + 1
  int output_level = 1;  // level + 1, or level itself for an in-place rewrite
  std::vector<std::shared_ptr<const FileMeta>> inputs[2];
  // One input file and nothing to merge with: move it down by a manifest edit.
  bool trivial_move = false;
};

// Per level, the key where the last compaction of that level ended, so the
// next one starts after it (round robin over the key space).
struct CompactPointers {
  std::string key[kNumLevels];
};

// The level with the highest score >= 1, and the files to compact there; or
// nullptr when every level is within its target.
std::unique_ptr<Compaction> PickCompaction(const Version& v, const CompactionOptions& options,
                                           CompactPointers* pointers);
// Every file of level overlapping [begin, end] (user keys; empty = unbounded),
// with its overlaps one level down; or, in_place, rewritten into level itself
// (for the deepest level, whose garbage nothing below would ever collect).
// nullptr when there is none.
std::unique_ptr<Compaction> PickRangeCompaction(const Version& v, int level, const std::string& begin,
                                                const std::string& end, bool in_place);
// The highest score over all levels (>= 1 means a compaction is due).
double MaxCompactionScore(const Version& v, const CompactionOptions& options);

// A companion of one table (the search index segment): it sees every entry
// the table gets, and is written and synced before the table is recorded in
// the manifest, so a live table always has its companion. A companion left
// by a failed write is an orphan like the table, removed with it.
class TableSidecar {
 public:
  virtual ~TableSidecar() = default;
  virtual void Add(std::string_view internal_key, std::string_view value) = 0;
  // Writes and syncs the companion of table `number`.
  virtual Status Finish(uint64_t number) = 0;
};
// Makes the companion of each table written; may be empty (no companions).
using SidecarFactory = std::function<std::unique_ptr<TableSidecar>()>;

// Writes the entries of iter (in internal-key order) as table number
// `number`, fsyncs and closes it, and fills *meta. An empty input writes no
// file and leaves meta->file_size 0.
Status BuildTable(Env* env, const std::string& dbname, uint64_t number, const sstable::TableOptions& options,
                  InternalIterator* iter, FileMeta* meta, const SidecarFactory& sidecars = {});

struct CompactionStats {
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t entries_dropped = 0;
};

// Runs c against version v: merges the inputs, drops versions that no
// snapshot at or above smallest_snapshot can see and deletions that shadow
// nothing below, writes output tables (numbers from new_file_number, each
// reported to on_output before it is created, so that the caller can protect
// it from deletion), and fills *edit with the change to install.
Status RunCompaction(const Compaction& c, const Version& v, Env* env, const std::string& dbname,
                     TableCache* cache, const CompactionOptions& options, SequenceNumber smallest_snapshot,
                     const std::function<uint64_t()>& new_file_number, VersionEdit* edit,
                     CompactionStats* stats, const SidecarFactory& sidecars = {});

}  // namespace kvstore
