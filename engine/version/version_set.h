// Versions: the set of live tables per level, replaced (never mutated) by
// each flush or compaction, and the manifest that records the sequence of
// changes (docs/format/manifest.md).
//
// A Version is shared through std::shared_ptr: readers and iterators pin the
// one they started with, so the tables it lists stay until they let go.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/coding/internal_key.h"
#include "engine/sync/mutex.h"
#include "engine/version/table_cache.h"
#include "engine/version/version_edit.h"
#include "engine/wal/log_writer.h"
#include "kvstore/env.h"

namespace kvstore {

std::string ManifestFileName(const std::string& dbname, uint64_t number);
std::string CurrentFileName(const std::string& dbname);

class Version {
 public:
  // L0: newest first (highest file number first); key ranges may overlap.
  // L1 and up: ascending, non-overlapping key ranges.
  std::vector<std::shared_ptr<const FileMeta>> files[kNumLevels];

  enum class Lookup { kFound, kDeleted, kAbsent };
  // The newest entry for lookup_key's user key at or below its sequence.
  // *tables_probed counts the tables actually read (filters passed).
  // *found_seq (when not null) receives the entry's sequence.
  Status Get(std::string_view lookup_key, TableCache* cache, Lookup* result, std::string* value,
             int* tables_probed, SequenceNumber* found_seq = nullptr) const;

  // One iterator per L0 table, one concatenating iterator per deeper level.
  void AddIterators(TableCache* cache, std::vector<std::unique_ptr<InternalIterator>>* out) const;

  uint64_t LevelBytes(int level) const;
  // Files of level whose user-key range intersects [smallest, largest] (user keys).
  std::vector<std::shared_ptr<const FileMeta>> Overlapping(int level, std::string_view smallest,
                                                           std::string_view largest) const;
};

// An iterator over the files of one sorted level, opening each in turn.
std::unique_ptr<InternalIterator> NewLevelIterator(TableCache* cache,
                                                   std::vector<std::shared_ptr<const FileMeta>> files);

// Writes dir/MANIFEST-<number> holding edit, fsyncs it, and points
// dir/CURRENT at it (temp file, fsync, rename, directory fsync). On success
// *writer (if given) stays open for appending further edits.
Status WriteManifest(Env* env, const std::string& dir, uint64_t number, const VersionEdit& edit,
                     std::unique_ptr<wal::LogWriter>* writer);

class VersionSet {
 public:
  VersionSet(Env* env, std::string dbname);
  ~VersionSet();

  // Reads CURRENT and the manifest it names. *existed is false (and nothing
  // is read) when there is no CURRENT.
  Status Recover(bool* existed);
  // Starts a new manifest holding the whole current state and points
  // CURRENT at it (temp file, fsync, rename, directory fsync).
  Status StartNewManifest();
  // Appends the edit to the manifest, fsyncs it, then installs the new
  // version. Callers serialize LogAndApply among themselves. After a failed
  // fsync the edit's outcome is unknown: every later call fails, and the
  // caller must keep every file the edit names.
  Status LogAndApply(VersionEdit* edit);

  std::shared_ptr<const Version> current() const EXCLUDES(mu_);
  // The current version together with the WAL number and last sequence the
  // manifest records with it (a consistent pair, for checkpoints).
  void CurrentState(std::shared_ptr<const Version>* version, uint64_t* log_number,
                    SequenceNumber* last_sequence) const EXCLUDES(mu_);
  // The whole state as one edit (what a new manifest starts with).
  VersionEdit SnapshotEdit(const Version& v, uint64_t log_number, SequenceNumber last_sequence) const;
  uint64_t NewFileNumber() { return next_file_number_.fetch_add(1); }
  void MarkFileNumberUsed(uint64_t number);
  uint64_t next_file_number() const { return next_file_number_.load(); }
  uint64_t log_number() const EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    return log_number_;
  }
  SequenceNumber last_sequence() const EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    return last_sequence_;
  }
  uint64_t manifest_number() const { return manifest_number_; }

  // Every table any live version (the current one, or one still pinned by a
  // reader) refers to.
  std::set<uint64_t> LiveFiles() EXCLUDES(mu_);

 private:
  Status Apply(const VersionEdit& edit, std::shared_ptr<const Version>* out) const;

  Env* const env_;
  const std::string dbname_;
  std::atomic<uint64_t> next_file_number_{2};
  // The manifest: touched by Recover, StartNewManifest and LogAndApply only,
  // which the caller serializes (DBImpl: Open, then the background thread
  // alone), so no lock.
  uint64_t manifest_number_ = 0;
  std::unique_ptr<wal::LogWriter> manifest_;
  Status manifest_error_;  // set when an edit's outcome became unknown

  // Held only to read or swap what follows, never across I/O, so readers
  // asking for current() never wait behind a manifest fsync.
  mutable Mutex mu_;
  uint64_t log_number_ GUARDED_BY(mu_) = 0;
  SequenceNumber last_sequence_ GUARDED_BY(mu_) = 0;
  std::shared_ptr<const Version> current_ GUARDED_BY(mu_);
  std::vector<std::weak_ptr<const Version>> versions_ GUARDED_BY(mu_);  // every version handed out
};

}  // namespace kvstore
