// libFuzzer target: arbitrary bytes as a manifest, replayed the way Open
// replays it (CURRENT names it; VersionSet::Recover reads every edit and
// applies it). Each input is also decoded as a single version edit, which
// must re-encode to bytes that decode to the same edit. The oracle: a
// Status or a recovered version, with no crash, sanitizer report or hang.
//   ./kv fuzz manifest 600
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/version/table_cache.h"
#include "engine/version/version_edit.h"
#include "engine/version/version_set.h"
#include "fuzz/fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  kvstore::VersionEdit edit;
  if (edit.DecodeFrom(bytes).ok()) {
    std::string once, twice;
    edit.EncodeTo(&once);
    kvstore::VersionEdit again;
    if (!again.DecodeFrom(once).ok()) __builtin_trap();
    again.EncodeTo(&twice);
    if (once != twice) __builtin_trap();
  }

  kvstore::fuzz::ReadOnlyMemEnv env;
  env.files["/db/CURRENT"] = "MANIFEST-000001\n";
  env.files["/db/MANIFEST-000001"] = bytes;
  kvstore::VersionSet versions(&env, "/db");
  bool existed = false;
  if (!versions.Recover(&existed).ok()) return 0;
  // Use what was recovered the way Open does next.
  auto v = versions.current();
  for (int level = 0; level < kvstore::kNumLevels; level++) (void)v->LevelBytes(level);
  // Lookups walk the recovered key ranges; the tables themselves are absent,
  // so a probe ends in NotFound.
  kvstore::TableCache tables(&env, "/db", nullptr, 10);
  for (int level = 0; level < kvstore::kNumLevels; level++) {
    for (const auto& f : v->files[level]) {
      kvstore::Version::Lookup result;
      std::string value;
      int probed = 0;
      (void)v->Get(f->smallest, &tables, &result, &value, &probed);
      (void)v->Overlapping(level, kvstore::ExtractUserKey(f->smallest), kvstore::ExtractUserKey(f->largest));
    }
  }
  (void)versions.LiveFiles();
  return 0;
}
