#include "engine/version/version_set.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "engine/sstable/table.h"
#include "engine/wal/log_reader.h"

namespace kvstore {

std::string ManifestFileName(const std::string& dbname, uint64_t number) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "/MANIFEST-%06" PRIu64, number);
  return dbname + buf;
}
std::string CurrentFileName(const std::string& dbname) { return dbname + "/CURRENT"; }

namespace {

constexpr uint64_t kManifestRolloverBytes = 4 << 20;

bool UserKeyInFile(std::string_view user_key, const FileMeta& f) {
  return CompareUserKeys(user_key, ExtractUserKey(f.smallest)) >= 0 &&
         CompareUserKeys(user_key, ExtractUserKey(f.largest)) <= 0;
}

Status ProbeTable(const FileMeta& f, std::string_view lookup_key, TableCache* cache, Version::Lookup* result,
                  std::string* value, int* probed, SequenceNumber* found_seq) {
  std::shared_ptr<const sstable::Table> table;
  Status s = cache->Find(f.number, f.file_size, &table);
  if (!s.ok()) return s;
  if (!table->MayContain(ExtractUserKey(lookup_key))) return Status::OK();
  ++*probed;
  sstable::Table::Lookup r;
  s = table->Get(lookup_key, &r, value, found_seq);
  if (!s.ok()) return s;
  if (r == sstable::Table::Lookup::kFound) *result = Version::Lookup::kFound;
  if (r == sstable::Table::Lookup::kDeleted) *result = Version::Lookup::kDeleted;
  return Status::OK();
}

// Concatenates the tables of one sorted level; only one is open at a time.
class LevelIterator final : public InternalIterator {
 public:
  LevelIterator(TableCache* cache, std::vector<std::shared_ptr<const FileMeta>> files)
      : cache_(cache), files_(std::move(files)) {}

  bool Valid() const override { return iter_ != nullptr && iter_->Valid(); }
  void SeekToFirst() override {
    OpenFile(0);
    if (iter_ != nullptr) iter_->SeekToFirst();
    SkipEmpty();
  }
  void Seek(std::string_view target) override {
    // The first file whose largest key is >= target.
    auto it = std::lower_bound(files_.begin(), files_.end(), target,
                               [](const std::shared_ptr<const FileMeta>& f, std::string_view t) {
                                 return CompareInternalKeys(f->largest, t) < 0;
                               });
    OpenFile(static_cast<size_t>(it - files_.begin()));
    if (iter_ != nullptr) iter_->Seek(target);
    SkipEmpty();
  }
  void Next() override {
    iter_->Next();
    SkipEmpty();
  }
  std::string_view key() const override { return iter_->key(); }
  std::string_view value() const override { return iter_->value(); }
  Status status() const override {
    if (!status_.ok()) return status_;
    return iter_ != nullptr ? iter_->status() : Status::OK();
  }

 private:
  void OpenFile(size_t index) {
    iter_.reset();
    table_.reset();
    index_ = index;
    if (index >= files_.size() || !status_.ok()) return;
    status_ = cache_->Find(files_[index]->number, files_[index]->file_size, &table_);
    if (status_.ok()) iter_ = table_->NewIterator();
  }
  void SkipEmpty() {
    while (iter_ != nullptr && !iter_->Valid() && iter_->status().ok()) {
      OpenFile(index_ + 1);
      if (iter_ != nullptr) iter_->SeekToFirst();
    }
  }

  TableCache* const cache_;
  const std::vector<std::shared_ptr<const FileMeta>> files_;
  size_t index_ = 0;
  std::shared_ptr<const sstable::Table> table_;  // outlives iter_
  std::unique_ptr<InternalIterator> iter_;
  Status status_;
};

}  // namespace

std::unique_ptr<InternalIterator> NewLevelIterator(TableCache* cache,
                                                   std::vector<std::shared_ptr<const FileMeta>> files) {
  return std::make_unique<LevelIterator>(cache, std::move(files));
}

Status Version::Get(std::string_view lookup_key, TableCache* cache, Lookup* result, std::string* value,
                    int* tables_probed, SequenceNumber* found_seq) const {
  *result = Lookup::kAbsent;
  const std::string_view user_key = ExtractUserKey(lookup_key);
  for (const auto& f : files[0]) {
    if (!UserKeyInFile(user_key, *f)) continue;
    Status s = ProbeTable(*f, lookup_key, cache, result, value, tables_probed, found_seq);
    if (!s.ok() || *result != Lookup::kAbsent) return s;
  }
  for (int level = 1; level < kNumLevels; level++) {
    const auto& fs = files[level];
    auto it = std::lower_bound(fs.begin(), fs.end(), user_key,
                               [](const std::shared_ptr<const FileMeta>& f, std::string_view k) {
                                 return CompareUserKeys(ExtractUserKey(f->largest), k) < 0;
                               });
    if (it == fs.end() || !UserKeyInFile(user_key, **it)) continue;
    Status s = ProbeTable(**it, lookup_key, cache, result, value, tables_probed, found_seq);
    if (!s.ok() || *result != Lookup::kAbsent) return s;
  }
  return Status::OK();
}

void Version::AddIterators(TableCache* cache, std::vector<std::unique_ptr<InternalIterator>>* out) const {
  for (const auto& f : files[0]) out->push_back(NewLevelIterator(cache, {f}));
  for (int level = 1; level < kNumLevels; level++) {
    if (!files[level].empty()) out->push_back(NewLevelIterator(cache, files[level]));
  }
}

uint64_t Version::LevelBytes(int level) const {
  uint64_t total = 0;
  for (const auto& f : files[level]) total += f->file_size;
  return total;
}

std::vector<std::shared_ptr<const FileMeta>> Version::Overlapping(int level, std::string_view smallest,
                                                                  std::string_view largest) const {
  std::vector<std::shared_ptr<const FileMeta>> out;
  for (const auto& f : files[level]) {
    if (CompareUserKeys(ExtractUserKey(f->largest), smallest) < 0 ||
        CompareUserKeys(ExtractUserKey(f->smallest), largest) > 0) {
      continue;
    }
    out.push_back(f);
  }
  return out;
}

VersionSet::VersionSet(Env* env, std::string dbname)
    : env_(env), dbname_(std::move(dbname)), current_(std::make_shared<Version>()) {}

VersionSet::~VersionSet() {
  if (manifest_ != nullptr) (void)manifest_->Close();
}

std::shared_ptr<const Version> VersionSet::current() const {
  MutexLock lock(&mu_);
  return current_;
}

void VersionSet::MarkFileNumberUsed(uint64_t number) {
  uint64_t next = next_file_number_.load();
  while (next <= number && !next_file_number_.compare_exchange_weak(next, number + 1)) {
  }
}


Status VersionSet::Apply(const VersionEdit& edit, std::shared_ptr<const Version>* out) const {
  auto v = std::make_shared<Version>();
  std::shared_ptr<const Version> base = current();
  for (int level = 0; level < kNumLevels; level++) {
    for (const auto& f : base->files[level]) {
      bool deleted = false;
      for (const auto& [dl, dn] : edit.deleted_files) deleted |= dl == level && dn == f->number;
      if (!deleted) v->files[level].push_back(f);
    }
  }
  for (const auto& [level, f] : edit.new_files) v->files[level].push_back(f);
  std::sort(v->files[0].begin(), v->files[0].end(),
            [](const auto& a, const auto& b) { return a->number > b->number; });
  for (int level = 1; level < kNumLevels; level++) {
    auto& fs = v->files[level];
    std::sort(fs.begin(), fs.end(),
              [](const auto& a, const auto& b) { return CompareInternalKeys(a->smallest, b->smallest) < 0; });
    for (size_t i = 1; i < fs.size(); i++) {
      if (CompareUserKeys(ExtractUserKey(fs[i - 1]->largest), ExtractUserKey(fs[i]->smallest)) >= 0) {
        return Status::Corruption("manifest: overlapping tables " + std::to_string(fs[i - 1]->number) +
                                  " and " + std::to_string(fs[i]->number) + " in level " +
                                  std::to_string(level));
      }
    }
  }
  *out = std::move(v);
  return Status::OK();
}

Status VersionSet::Recover(bool* existed) {
  *existed = false;
  const std::string current_path = CurrentFileName(dbname_);
  if (!env_->FileExists(current_path)) return Status::OK();
  *existed = true;

  std::unique_ptr<SequentialFile> cf;
  Status s = env_->NewSequentialFile(current_path, &cf);
  if (!s.ok()) return s;
  char buf[256];
  std::string_view got;
  s = cf->Read(sizeof(buf), &got, buf);
  if (!s.ok()) return s;
  if (got.empty() || got.back() != '\n' || got.substr(0, 9) != "MANIFEST-") {
    return Status::Corruption(current_path + ": does not name a manifest (expected \"MANIFEST-NNNNNN\\n\")");
  }
  const std::string manifest_name(got.substr(0, got.size() - 1));
  uint64_t number = 0;
  for (char c : manifest_name.substr(9)) {
    if (c < '0' || c > '9') return Status::Corruption(current_path + ": bad manifest name " + manifest_name);
    number = number * 10 + static_cast<uint64_t>(c - '0');
  }
  const std::string path = dbname_ + "/" + manifest_name;
  std::unique_ptr<SequentialFile> mf;
  s = env_->NewSequentialFile(path, &mf);
  if (!s.ok()) return Status::Corruption(path + ": named by CURRENT but cannot be read: " + s.ToString());
  wal::LogReader reader(std::move(mf), path);
  s = reader.ReadHeader();
  if (!s.ok()) return s;
  bool damaged = false;
  std::string damage;
  uint64_t edits = 0;
  for (;;) {
    std::string_view record;
    uint64_t offset;
    auto r = reader.Read(&record, &offset);
    if (r == wal::LogReader::Result::kEnd) break;
    if (r == wal::LogReader::Result::kIOError) return Status::IOError(path + ": " + reader.error());
    if (r == wal::LogReader::Result::kBadRecord) {
      if (!damaged) damage = "offset " + std::to_string(offset) + ": " + reader.error();
      damaged = true;
      continue;
    }
    if (damaged) return Status::Corruption(path + " at " + damage + " (valid edits follow)");
    VersionEdit edit;
    s = edit.DecodeFrom(record);
    if (!s.ok()) return Status::Corruption(path + " at offset " + std::to_string(offset) + ": " + s.ToString());
    std::shared_ptr<const Version> v;
    s = Apply(edit, &v);
    if (!s.ok()) return s;
    {
      MutexLock lock(&mu_);
      current_ = std::move(v);
      if (edit.log_number) log_number_ = *edit.log_number;
      if (edit.last_sequence) last_sequence_ = *edit.last_sequence;
    }
    if (edit.next_file_number) MarkFileNumberUsed(*edit.next_file_number - 1);
    for (const auto& [level, f] : edit.new_files) MarkFileNumberUsed(f->number);
    edits++;
  }
  // A torn last edit was never acknowledged (LogAndApply syncs first); it is
  // dropped with the old manifest when StartNewManifest replaces it.
  if (edits == 0) return Status::Corruption(path + ": holds no version edit");
  MarkFileNumberUsed(number);
  return Status::OK();
}

Status WriteManifest(Env* env, const std::string& dir, uint64_t number, const VersionEdit& edit,
                     std::unique_ptr<wal::LogWriter>* writer_out) {
  const std::string path = ManifestFileName(dir, number);
  std::unique_ptr<wal::LogWriter> writer;
  Status s = wal::LogWriter::Create(env, path, &writer);
  if (!s.ok()) return s;
  std::string record;
  edit.EncodeTo(&record);
  s = writer->AddRecord(record);
  if (s.ok()) s = writer->Sync();
  const std::string tmp = CurrentFileName(dir) + ".tmp";
  if (s.ok()) {
    std::unique_ptr<WritableFile> cf;
    s = env->NewWritableFile(tmp, &cf);
    char name[40];
    std::snprintf(name, sizeof(name), "MANIFEST-%06" PRIu64 "\n", number);
    if (s.ok()) s = cf->Append(name);
    if (s.ok()) s = cf->Sync();
    if (cf != nullptr) {
      Status c = cf->Close();
      if (s.ok()) s = c;
    }
  }
  if (s.ok()) s = env->SyncDir(dir);  // the manifest's entry, before CURRENT names it
  bool renamed = false;
  if (s.ok()) {
    s = env->RenameFile(tmp, CurrentFileName(dir));
    renamed = s.ok();
  }
  if (s.ok()) s = env->SyncDir(dir);
  if (!s.ok()) {
    (void)writer->Close();
    // Once CURRENT may name the new manifest, it must stay.
    if (!renamed) (void)env->RemoveFile(path);
    return s;
  }
  if (writer_out != nullptr) {
    *writer_out = std::move(writer);
  } else {
    s = writer->Close();
  }
  return s;
}

VersionEdit VersionSet::SnapshotEdit(const Version& v, uint64_t log_number, SequenceNumber last_sequence) const {
  VersionEdit snapshot;
  snapshot.log_number = log_number;
  snapshot.last_sequence = last_sequence;
  snapshot.next_file_number = next_file_number_.load();
  for (int level = 0; level < kNumLevels; level++) {
    for (const auto& f : v.files[level]) snapshot.new_files.emplace_back(level, f);
  }
  return snapshot;
}

void VersionSet::CurrentState(std::shared_ptr<const Version>* version, uint64_t* log_number,
                              SequenceNumber* last_sequence) const {
  MutexLock lock(&mu_);
  *version = current_;
  *log_number = log_number_;
  *last_sequence = last_sequence_;
}

Status VersionSet::StartNewManifest() {
  const uint64_t number = NewFileNumber();
  std::shared_ptr<const Version> v;
  uint64_t log_number;
  SequenceNumber last_sequence;
  CurrentState(&v, &log_number, &last_sequence);
  std::unique_ptr<wal::LogWriter> writer;
  Status s = WriteManifest(env_, dbname_, number, SnapshotEdit(*v, log_number, last_sequence), &writer);
  if (!s.ok()) return s;
  const uint64_t old = manifest_number_;
  if (manifest_ != nullptr) (void)manifest_->Close();
  manifest_ = std::move(writer);
  manifest_number_ = number;
  if (old != 0) (void)env_->RemoveFile(ManifestFileName(dbname_, old));
  return Status::OK();
}

Status VersionSet::LogAndApply(VersionEdit* edit) {
  edit->next_file_number = next_file_number_.load();
  {
    MutexLock lock(&mu_);
    if (edit->log_number && *edit->log_number < log_number_) edit->log_number = log_number_;
    if (edit->last_sequence && *edit->last_sequence < last_sequence_) edit->last_sequence = last_sequence_;
  }
  std::shared_ptr<const Version> v;
  Status s = Apply(*edit, &v);
  if (!s.ok()) return s;
  if (!manifest_error_.ok()) return manifest_error_;
  std::string record;
  edit->EncodeTo(&record);
  s = manifest_->AddRecord(record);
  if (s.ok()) {
    s = manifest_->Sync();
    if (!s.ok()) {
      // The edit is written and may be durable, or may not: its outcome is
      // unknown, so nothing it names may be deleted, and no later edit may
      // follow it into this manifest. The store must be reopened.
      manifest_error_ = Status::IOError("manifest sync failed, edit outcome unknown: " + s.ToString());
      return manifest_error_;
    }
  } else if (!manifest_->healthy()) {
    manifest_error_ = s;
    return s;
  }
  if (!s.ok()) return s;  // the append was undone: nothing happened
  {
    MutexLock lock(&mu_);
    if (edit->log_number) log_number_ = *edit->log_number;
    if (edit->last_sequence) last_sequence_ = *edit->last_sequence;
    versions_.push_back(current_);
    current_ = std::move(v);
  }
  // Manifests only grow between opens; start a fresh one now and then so
  // that a long-running process does not replay an endless log at its next
  // open. A failure here keeps the current manifest, which is still valid.
  if (manifest_->size() > kManifestRolloverBytes) (void)StartNewManifest();
  return Status::OK();
}

std::set<uint64_t> VersionSet::LiveFiles() {
  MutexLock lock(&mu_);
  std::set<uint64_t> live;
  auto add = [&](const Version& v) {
    for (const auto& level : v.files) {
      for (const auto& f : level) live.insert(f->number);
    }
  };
  add(*current_);
  std::erase_if(versions_, [&](const std::weak_ptr<const Version>& w) {
    std::shared_ptr<const Version> v = w.lock();
    if (v == nullptr) return true;
    add(*v);
    return false;
  });
  return live;
}

}  // namespace kvstore
