// libFuzzer target: arbitrary bytes as a WAL segment, read back the way
// recovery reads it (LogReader, then each record decoded as a write batch
// and applied to a memtable). The oracle: every input ends in records, bad
// records or an error, with no crash, sanitizer report or hang.
//   ./kv fuzz wal 600
#include <cstdint>
#include <string_view>

#include "engine/memtable/memtable.h"
#include "engine/wal/log_reader.h"
#include "engine/write_batch_internal.h"
#include "fuzz/fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  kvstore::wal::LogReader reader(std::make_unique<kvstore::fuzz::StringSequentialFile>(bytes), "fuzz.log");
  if (!reader.ReadHeader().ok()) return 0;
  kvstore::MemTable mem(1, 1 << 20);
  // Every Read consumes at least one byte, so this bound is never reached
  // unless the reader stops making progress, which is a hang.
  for (size_t calls = 0;; calls++) {
    if (calls > size + 1) __builtin_trap();
    std::string_view record;
    uint64_t offset = 0;
    auto r = reader.Read(&record, &offset);
    if (r == kvstore::wal::LogReader::Result::kEnd || r == kvstore::wal::LogReader::Result::kIOError) break;
    if (offset > size || reader.last_record_end() > size) __builtin_trap();
    if (r != kvstore::wal::LogReader::Result::kRecord) continue;
    kvstore::WriteBatch batch;
    if (!kvstore::WriteBatchInternal::SetContents(&batch, record).ok()) continue;
    if (!kvstore::WriteBatchInternal::Validate(batch, /*vector_dimension=*/4).ok()) continue;
    if (kvstore::WriteBatchInternal::InsertInto(batch, &mem).ok() && mem.MemoryUsage() > (64 << 20)) break;
  }
  // Read back what replay inserted, as a reader would.
  auto it = mem.NewIterator();
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string value;
    (void)mem.Get(kvstore::ExtractUserKey(it->key()), kvstore::kMaxSequenceNumber, &value);
  }
  return 0;
}
