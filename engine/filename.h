// File names inside a data directory (docs/format/wal.md lists them).
#pragma once

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace kvstore {

inline std::string LogFileName(const std::string& dbname, uint64_t number) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "/%06" PRIu64 ".log", number);
  return dbname + buf;
}
inline std::string LockFileName(const std::string& dbname) { return dbname + "/LOCK"; }

// Parses "NNNNNN<suffix>" into its number.
inline bool ParseNumberedFileName(std::string_view name, std::string_view suffix, uint64_t* number) {
  if (name.size() <= suffix.size() || name.substr(name.size() - suffix.size()) != suffix) {
    return false;
  }
  name.remove_suffix(suffix.size());
  uint64_t n = 0;
  for (char c : name) {
    if (c < '0' || c > '9' || n > (UINT64_MAX - 9) / 10) return false;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  *number = n;
  return true;
}

inline bool ParseLogFileName(std::string_view name, uint64_t* number) {
  return ParseNumberedFileName(name, ".log", number);
}
inline bool ParseTableFileName(std::string_view name, uint64_t* number) {
  return ParseNumberedFileName(name, ".sst", number);
}

}  // namespace kvstore
