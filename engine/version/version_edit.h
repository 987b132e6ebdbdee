// VersionEdit: one change to the set of live tables, as recorded in the
// manifest (docs/format/manifest.md): tables added and removed per level,
// and the counters recovery needs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kvstore/status.h"

namespace kvstore {

inline constexpr int kNumLevels = 7;

// A live table. Immutable once in a version.
struct FileMeta {
  uint64_t number = 0;
  uint64_t file_size = 0;
  uint64_t entries = 0;
  std::string smallest;  // internal keys
  std::string largest;
};

class VersionEdit {
 public:
  std::optional<uint64_t> log_number;        // WAL segments below this are obsolete
  std::optional<uint64_t> next_file_number;  // next number free for any file
  std::optional<uint64_t> last_sequence;
  std::vector<std::pair<int, uint64_t>> deleted_files;          // (level, number)
  std::vector<std::pair<int, std::shared_ptr<const FileMeta>>> new_files;

  void AddFile(int level, FileMeta meta) {
    new_files.emplace_back(level, std::make_shared<const FileMeta>(std::move(meta)));
  }
  void DeleteFile(int level, uint64_t number) { deleted_files.emplace_back(level, number); }

  void EncodeTo(std::string* dst) const;
  Status DecodeFrom(std::string_view input);
};

}  // namespace kvstore
