// DB::Repair: rebuilds a store's manifest from whatever tables and WAL
// segments can still be read, after the LevelDB idea: every WAL segment
// becomes a table, every table is checked (a damaged one is rewritten from
// its readable blocks), and a fresh manifest lists them all in L0, leaving
// compaction to sort the levels out again.
#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/compaction/compaction.h"
#include "engine/db_search.h"
#include "engine/filename.h"
#include "engine/memtable/memtable.h"
#include "engine/sstable/table.h"
#include "engine/version/version_set.h"
#include "engine/wal/log_reader.h"
#include "engine/write_batch_internal.h"
#include "kvstore/db.h"

namespace kvstore {

namespace {

// The salvaged entries of one damaged table, already in order.
class VectorIterator final : public InternalIterator {
 public:
  explicit VectorIterator(const std::vector<std::pair<std::string, std::string>>* entries)
      : entries_(entries), pos_(entries->size()) {}
  bool Valid() const override { return pos_ < entries_->size(); }
  void SeekToFirst() override { pos_ = 0; }
  void Seek(std::string_view target) override {
    pos_ = static_cast<size_t>(
        std::lower_bound(entries_->begin(), entries_->end(), target,
                         [](const auto& e, std::string_view t) { return CompareInternalKeys(e.first, t) < 0; }) -
        entries_->begin());
  }
  void Next() override { ++pos_; }
  std::string_view key() const override { return (*entries_)[pos_].first; }
  std::string_view value() const override { return (*entries_)[pos_].second; }

 private:
  const std::vector<std::pair<std::string, std::string>>* entries_;
  size_t pos_;
};

// A table the new manifest will list, with the newest sequence it holds,
// which decides its place among the L0 tables.
struct Output {
  SequenceNumber max_sequence = 0;
  FileMeta meta;
};

class Repairer {
 public:
  Repairer(const Options& options, std::string dbname)
      : env_(options.env != nullptr ? options.env : Env::Default()), dbname_(std::move(dbname)) {
    table_options_.bloom_bits_per_key = options.bloom_bits_per_key;
    table_options_.compression = options.compression ? sstable::Compression::kLZ4 : sstable::Compression::kNone;
  }

  Status Run(RepairStats* stats) {
    if (!env_->FileExists(dbname_)) return Status::InvalidArgument(dbname_ + ": does not exist");
    // The lock keeps a running server (or any open DB) out for the whole
    // repair, which renames and rewrites files under it.
    std::unique_ptr<FileLock> lock;
    Status s = env_->LockFile(LockFileName(dbname_), &lock);
    if (!s.ok()) return s;
    s = Scan();
    if (s.ok()) s = env_->CreateDir(LostDir());
    for (uint64_t n : tables_) {
      if (s.ok()) s = CheckTable(n);
    }
    for (uint64_t n : logs_) {
      if (s.ok()) s = ConvertLog(n);
    }
    if (s.ok()) s = WriteNewManifest();
    if (s.ok()) s = CleanUp();
    *stats = stats_;
    return s;
  }

 private:
  std::string LostDir() const { return dbname_ + "/lost"; }

  Status MoveToLost(const std::string& name) {
    Status s = env_->RenameFile(dbname_ + "/" + name, LostDir() + "/" + name);
    if (s.ok()) stats_.files_moved++;
    return s;
  }

  Status Scan() {
    std::vector<std::string> children;
    Status s = env_->GetChildren(dbname_, &children);
    if (!s.ok()) return s;
    uint64_t max_number = 0;
    for (const std::string& name : children) {
      uint64_t number = 0;
      if (ParseLogFileName(name, &number)) {
        logs_.push_back(number);
      } else if (ParseTableFileName(name, &number)) {
        tables_.push_back(number);
      } else if (ParseIndexFileName(name, &number)) {
        indexes_.push_back(number);
      } else if (name.starts_with("MANIFEST-")) {
        manifests_.push_back(name);
        // A manifest whose number does not parse still must not be reused.
        ParseNumberedFileName(name.substr(9), "", &number);
      } else {
        continue;
      }
      max_number = std::max(max_number, number);
    }
    if (logs_.empty() && tables_.empty() && manifests_.empty()) {
      return Status::InvalidArgument(dbname_ + ": no store here (no tables, WAL segments or manifests)");
    }
    std::sort(logs_.begin(), logs_.end());
    std::sort(tables_.begin(), tables_.end());
    next_number_ = max_number + 1;
    // WAL segments older than a readable manifest's log number are already
    // in its tables, and may predate a compaction that dropped a deletion
    // together with the value it deleted: replaying them would bring that
    // value back. They go to lost/ unread.
    {
      VersionSet old(env_, dbname_);
      bool existed = false;
      if (old.Recover(&existed).ok() && existed) {
        const uint64_t min_log = old.log_number();
        for (uint64_t n : logs_) {
          if (n < min_log) stale_logs_.push_back(n);
        }
        std::erase_if(logs_, [&](uint64_t n) { return n < min_log; });
      }
    }
    return Status::OK();
  }

  // Keeps an intact table as it is; rewrites a damaged one from the blocks
  // that still read back, and moves the original into lost/.
  Status CheckTable(uint64_t number) {
    const std::string path = TableFileName(dbname_, number);
    uint64_t size = 0;
    std::unique_ptr<RandomAccessFile> file;
    std::unique_ptr<sstable::Table> table;
    Status s = env_->GetFileSize(path, &size);
    if (s.ok()) s = env_->NewRandomAccessFile(path, &file);
    if (s.ok()) s = sstable::Table::Open(std::move(file), size, path, nullptr, &table);
    // Only damage is repaired: any other failure (EMFILE, ENOMEM, an I/O
    // error of a healthy disk) stops the repair rather than losing a table
    // that reads fine once the trouble passes.
    if (!s.ok() && !s.IsCorruption()) return s;
    if (s.ok()) {
      Output out;
      uint64_t entries = 0;
      std::unique_ptr<InternalIterator> it = table->NewIterator();
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        out.max_sequence = std::max(out.max_sequence, TagSequence(ExtractTag(it->key())));
        entries++;
      }
      if (it->status().ok()) {
        out.meta.number = number;
        out.meta.file_size = size;
        out.meta.entries = entries;
        out.meta.smallest = table->properties().smallest;
        out.meta.largest = table->properties().largest;
        if (entries > 0) outputs_.push_back(std::move(out));
        stats_.entries_recovered += entries;
        return Status::OK();
      }
      if (!it->status().IsCorruption()) return it->status();
    }
    // Past here the table is damaged. One whose footer, index or properties
    // do not read back has no readable blocks worth the name: it goes to
    // lost/ whole.
    stats_.damaged_files++;
    std::vector<std::pair<std::string, std::string>> entries;
    if (table != nullptr) {
      uint64_t bad_blocks = 0;
      (void)table->ForEachReadableEntry(
          [&](std::string_view k, std::string_view v) { entries.emplace_back(std::string(k), std::string(v)); },
          &bad_blocks);
    }
    table.reset();
    if (!entries.empty()) {
      Output out;
      for (const auto& e : entries) out.max_sequence = std::max(out.max_sequence, TagSequence(ExtractTag(e.first)));
      VectorIterator it(&entries);
      s = BuildTable(env_, dbname_, next_number_++, table_options_, &it, &out.meta);
      if (!s.ok()) return s;
      stats_.tables_salvaged++;
      stats_.entries_recovered += out.meta.entries;
      outputs_.push_back(std::move(out));
      // The salvaged copy's name must be durable before the original goes:
      // a crash in between must leave one of them where a second repair
      // looks (it does not look in lost/).
      s = env_->SyncDir(dbname_);
      if (!s.ok()) return s;
    }
    return MoveToLost(TableFileName("", number).substr(1));
  }

  // Replays a WAL segment into a memtable, stepping over damaged records,
  // and writes it out as a table. The segment itself goes to lost/ later,
  // once the new manifest covers its contents.
  Status ConvertLog(uint64_t number) {
    const std::string path = LogFileName(dbname_, number);
    std::unique_ptr<SequentialFile> file;
    Status s = env_->NewSequentialFile(path, &file);
    if (!s.ok()) return s;
    wal::LogReader reader(std::move(file), path);
    if (!reader.ReadHeader().ok()) {
      stats_.damaged_files++;
      return Status::OK();
    }
    MemTable mem(number);
    Output out;
    bool damaged = false;
    WriteBatch batch;
    for (;;) {
      std::string_view record;
      uint64_t offset = 0;
      wal::LogReader::Result r = reader.Read(&record, &offset);
      if (r == wal::LogReader::Result::kEnd || r == wal::LogReader::Result::kIOError) {
        damaged |= r == wal::LogReader::Result::kIOError;
        break;
      }
      if (r == wal::LogReader::Result::kBadRecord) {
        damaged = true;
        continue;
      }
      if (!WriteBatchInternal::SetContents(&batch, record).ok() ||
          !WriteBatchInternal::InsertInto(batch, &mem).ok()) {
        damaged = true;
        continue;
      }
      const uint32_t count = WriteBatchInternal::Count(batch);
      if (count > 0) {
        out.max_sequence = std::max(out.max_sequence, WriteBatchInternal::Sequence(batch) + count - 1);
      }
    }
    if (damaged) stats_.damaged_files++;
    stats_.logs_replayed++;
    std::unique_ptr<InternalIterator> it = mem.NewIterator();
    s = BuildTable(env_, dbname_, next_number_++, table_options_, it.get(), &out.meta);
    if (!s.ok()) return s;
    if (out.meta.file_size > 0) {
      stats_.entries_recovered += out.meta.entries;
      outputs_.push_back(std::move(out));
    }
    return Status::OK();
  }

  // L0 reads newest first by file number, and the tables here overlap
  // freely, so each gets a fresh number in the order of the newest sequence
  // it holds: of two tables with versions of one key, the one that saw the
  // later write wins, whatever level or segment it came from. The new
  // numbers are hard links: until the new manifest is durable the old one
  // still finds every table it names, so a crash or a failure in between
  // leaves the store as it was (plus orphans that open removes), and the
  // old names go only in CleanUp.
  Status WriteNewManifest() {
    std::sort(outputs_.begin(), outputs_.end(), [](const Output& a, const Output& b) {
      return std::tie(a.max_sequence, a.meta.number) < std::tie(b.max_sequence, b.meta.number);
    });
    VersionEdit edit;
    SequenceNumber last_sequence = 0;
    for (Output& out : outputs_) {
      const uint64_t number = next_number_++;
      Status s = env_->LinkFile(TableFileName(dbname_, out.meta.number), TableFileName(dbname_, number));
      if (!s.ok()) return s;
      replaced_tables_.push_back(out.meta.number);
      out.meta.number = number;
      last_sequence = std::max(last_sequence, out.max_sequence);
      edit.AddFile(0, out.meta);
    }
    stats_.tables = outputs_.size();
    Status s = env_->SyncDir(dbname_);
    if (!s.ok()) return s;
    const uint64_t manifest_number = next_number_++;
    // Every segment is now in a table: none is to be replayed.
    edit.log_number = next_number_;
    edit.next_file_number = next_number_ + 1;
    edit.last_sequence = last_sequence;
    return WriteManifest(env_, dbname_, manifest_number, edit, nullptr);
  }

  // The new manifest is in place: what it replaced goes to lost/ (kept, in
  // case the repair itself got something wrong), and the index segments,
  // named by the old table numbers, go (an open with search rebuilds them).
  Status CleanUp() {
    Status s;
    for (const std::string& name : manifests_) {
      if (s.ok()) s = MoveToLost(name);
    }
    for (const auto* list : {&logs_, &stale_logs_}) {
      for (uint64_t n : *list) {
        if (s.ok()) s = MoveToLost(LogFileName("", n).substr(1));
      }
    }
    for (uint64_t n : replaced_tables_) {
      if (s.ok()) s = env_->RemoveFile(TableFileName(dbname_, n));
    }
    for (uint64_t n : indexes_) {
      if (s.ok()) s = env_->RemoveFile(IndexFileName(dbname_, n));
    }
    if (env_->FileExists(CurrentFileName(dbname_) + ".tmp")) (void)env_->RemoveFile(CurrentFileName(dbname_) + ".tmp");
    if (s.ok()) s = env_->SyncDir(LostDir());
    if (s.ok()) s = env_->SyncDir(dbname_);
    return s;
  }

  Env* const env_;
  const std::string dbname_;
  sstable::TableOptions table_options_;
  std::vector<uint64_t> logs_;
  std::vector<uint64_t> stale_logs_;  // below a readable manifest's log number: not replayed
  std::vector<uint64_t> tables_;
  std::vector<uint64_t> indexes_;
  std::vector<std::string> manifests_;
  uint64_t next_number_ = 1;
  std::vector<Output> outputs_;
  std::vector<uint64_t> replaced_tables_;  // old names of the relinked outputs, removed once the manifest is in
  RepairStats stats_;
};

}  // namespace

Status DB::Repair(const Options& options, const std::string& path, RepairStats* stats) {
  RepairStats local;
  Status s = Repairer(options, path).Run(stats != nullptr ? stats : &local);
  if (!s.ok()) return s;
  // Every table is in L0 now, ordered by the newest sequence each holds,
  // which is not the right order for every key (a table's newest write may
  // be of another key), and Get trusts the first L0 table that has a key.
  // A full compaction merges them by internal key, newest version first,
  // so the store serves the newest version of every key from here on.
  Options open_options = options;
  open_options.create_if_missing = false;
  open_options.error_if_exists = false;
  std::unique_ptr<DB> db;
  s = DB::Open(open_options, path, &db);
  if (s.ok()) s = db->CompactRange("", "");
  return s;
}

}  // namespace kvstore
