// libFuzzer target: arbitrary bytes as an SSTable. Opens it (footer, index,
// filter, properties), walks every entry with the table iterator, seeks to
// keys it found and to keys around them, and looks them up with Get. The
// oracle: every call ends in a value or a Status, with no crash, sanitizer
// report or hang.
//   ./kv fuzz sstable 600
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/coding/internal_key.h"
#include "engine/sstable/block_cache.h"
#include "engine/sstable/table.h"
#include "fuzz/fuzz_files.h"

namespace {

std::string LookupKey(std::string_view user_key) {
  std::string k;
  kvstore::AppendInternalKey(&k, user_key, kvstore::kMaxSequenceNumber, kvstore::kValueTypeForSeek);
  return k;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using kvstore::sstable::Table;
  static auto* cache = new kvstore::sstable::BlockCache(1 << 20);  // shared, as in the DB
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::unique_ptr<Table> table;
  auto file = std::make_unique<kvstore::fuzz::StringRandomAccessFile>(bytes);
  if (!Table::Open(std::move(file), size, "fuzz.sst", cache, &table).ok()) return 0;

  std::vector<std::string> keys;
  auto it = table->NewIterator();
  size_t steps = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    // A block entry takes at least three bytes, so more entries than bytes
    // means the iterator is going round in circles.
    if (++steps > size) __builtin_trap();
    if (keys.size() < 64) keys.emplace_back(it->key());
    (void)it->value();
  }
  (void)it->status();
  keys.push_back(table->properties().smallest);
  keys.push_back(table->properties().largest);
  keys.emplace_back();
  for (const std::string& k : keys) {
    // Seek targets are well-formed internal keys, as the DB's always are;
    // what the table holds is anything.
    const std::string_view user_key = k.size() >= 8 ? kvstore::ExtractUserKey(k) : std::string_view(k);
    const std::string target = LookupKey(user_key);
    if (k.size() >= 8) {
      it->Seek(k);
      if (it->Valid()) it->Next();
      (void)it->status();
    }
    it->Seek(target);
    if (it->Valid()) it->Next();
    (void)it->status();
    Table::Lookup result;
    std::string value;
    (void)table->Get(target, &result, &value);
    (void)table->MayContain(user_key);
  }
  return 0;
}
