#include "engine/compaction/compaction.h"

#include <algorithm>

#include "engine/coding/merging_iterator.h"

namespace kvstore {

uint64_t MaxBytesForLevel(const CompactionOptions& options, int level) {
  uint64_t bytes = options.level1_bytes;
  for (int l = 1; l < level; l++) bytes *= 10;
  return bytes;
}

namespace {

double LevelScore(const Version& v, const CompactionOptions& options, int level) {
  if (level == 0) return static_cast<double>(v.files[0].size()) / options.l0_compaction_trigger;
  return static_cast<double>(v.LevelBytes(level)) / static_cast<double>(MaxBytesForLevel(options, level));
}

void KeyRange(const std::vector<std::shared_ptr<const FileMeta>>& files, std::string* smallest,
              std::string* largest) {
  smallest->clear();
  largest->clear();
  for (const auto& f : files) {
    if (smallest->empty() || CompareInternalKeys(f->smallest, *smallest) < 0) *smallest = f->smallest;
    if (largest->empty() || CompareInternalKeys(f->largest, *largest) > 0) *largest = f->largest;
  }
}

void AddNextLevelInputs(const Version& v, Compaction* c) {
  c->output_level = c->level + 1;
  std::string smallest, largest;
  KeyRange(c->inputs[0], &smallest, &largest);
  c->inputs[1] = v.Overlapping(c->level + 1, ExtractUserKey(smallest), ExtractUserKey(largest));
  c->trivial_move = c->inputs[0].size() == 1 && c->inputs[1].empty();
}

}  // namespace

double MaxCompactionScore(const Version& v, const CompactionOptions& options) {
  double best = 0;
  for (int level = 0; level < kNumLevels - 1; level++) best = std::max(best, LevelScore(v, options, level));
  return best;
}

std::unique_ptr<Compaction> PickCompaction(const Version& v, const CompactionOptions& options,
                                           CompactPointers* pointers) {
  int best_level = -1;
  double best = 1.0;
  for (int level = 0; level < kNumLevels - 1; level++) {
    double score = LevelScore(v, options, level);
    if (score >= best) {
      best = score;
      best_level = level;
    }
  }
  if (best_level < 0) return nullptr;
  auto c = std::make_unique<Compaction>();
  c->level = best_level;
  if (best_level == 0) {
    // The oldest L0 table, and every L0 table overlapping it (transitively):
    // what stays behind in L0 then shares no key with what moves down, so
    // no newer version can end up below an older one. Tables that overlap
    // nothing (a sequential load) move down alone, by a trivial move.
    const auto& l0 = v.files[0];  // newest first
    std::vector<bool> taken(l0.size(), false);
    taken.back() = true;
    std::string smallest = l0.back()->smallest, largest = l0.back()->largest;
    for (bool grew = true; grew;) {
      grew = false;
      for (size_t i = 0; i < l0.size(); i++) {
        if (taken[i] ||
            CompareUserKeys(ExtractUserKey(l0[i]->largest), ExtractUserKey(smallest)) < 0 ||
            CompareUserKeys(ExtractUserKey(l0[i]->smallest), ExtractUserKey(largest)) > 0) {
          continue;
        }
        taken[i] = grew = true;
        if (CompareInternalKeys(l0[i]->smallest, smallest) < 0) smallest = l0[i]->smallest;
        if (CompareInternalKeys(l0[i]->largest, largest) > 0) largest = l0[i]->largest;
      }
    }
    for (size_t i = 0; i < l0.size(); i++) {
      if (taken[i]) c->inputs[0].push_back(l0[i]);
    }
  } else {
    const auto& files = v.files[best_level];
    const std::string& after = pointers->key[best_level];
    auto it = std::find_if(files.begin(), files.end(), [&](const auto& f) {
      return after.empty() || CompareInternalKeys(f->largest, after) > 0;
    });
    if (it == files.end()) it = files.begin();
    c->inputs[0].push_back(*it);
    pointers->key[best_level] = (*it)->largest;
  }
  AddNextLevelInputs(v, c.get());
  return c;
}

std::unique_ptr<Compaction> PickRangeCompaction(const Version& v, int level, const std::string& begin,
                                                const std::string& end, bool in_place) {
  if (level >= kNumLevels - 1 && !in_place) return nullptr;
  if (level == 0 && in_place) return nullptr;  // L0 tables overlap: they can only go down
  auto c = std::make_unique<Compaction>();
  c->level = level;
  for (const auto& f : v.files[level]) {
    if (!end.empty() && CompareUserKeys(ExtractUserKey(f->smallest), end) > 0) continue;
    if (!begin.empty() && CompareUserKeys(ExtractUserKey(f->largest), begin) < 0) continue;
    c->inputs[0].push_back(f);
  }
  if (c->inputs[0].empty()) return nullptr;
  if (level == 0) c->inputs[0] = v.files[0];  // see PickCompaction
  if (in_place) {
    c->output_level = level;
  } else {
    AddNextLevelInputs(v, c.get());
  }
  c->trivial_move = false;  // a requested compaction rewrites, so it also drops garbage
  return c;
}

Status BuildTable(Env* env, const std::string& dbname, uint64_t number, const sstable::TableOptions& options,
                  InternalIterator* iter, FileMeta* meta, const SidecarFactory& sidecars) {
  meta->number = number;
  meta->file_size = 0;
  iter->SeekToFirst();
  if (!iter->Valid()) return iter->status();
  const std::string path = TableFileName(dbname, number);
  std::unique_ptr<WritableFile> file;
  Status s = env->NewWritableFile(path, &file);
  if (!s.ok()) return s;
  sstable::TableBuilder builder(options, file.get());
  std::unique_ptr<TableSidecar> sidecar = sidecars ? sidecars() : nullptr;
  for (; iter->Valid(); iter->Next()) {
    builder.Add(iter->key(), iter->value());
    if (sidecar != nullptr) sidecar->Add(iter->key(), iter->value());
  }
  s = iter->status();
  if (s.ok()) s = builder.Finish();
  if (s.ok()) s = file->Sync();
  Status c = file->Close();
  if (s.ok()) s = c;
  if (s.ok() && sidecar != nullptr) s = sidecar->Finish(number);
  if (!s.ok()) {
    (void)env->RemoveFile(path);
    return s;
  }
  meta->file_size = builder.FileSize();
  meta->entries = builder.properties().entries;
  meta->smallest = builder.properties().smallest;
  meta->largest = builder.properties().largest;
  return Status::OK();
}

namespace {

// Writes the compaction's output tables one after another.
class OutputWriter {
 public:
  OutputWriter(Env* env, const std::string& dbname, const CompactionOptions& options,
               const std::function<uint64_t()>& new_file_number, const SidecarFactory& sidecars)
      : env_(env),
        dbname_(dbname),
        options_(options),
        new_file_number_(new_file_number),
        sidecars_(sidecars) {}

  Status Add(std::string_view key, std::string_view value) {
    if (builder_ == nullptr) {
      meta_ = FileMeta();
      meta_.number = new_file_number_();
      Status s = env_->NewWritableFile(TableFileName(dbname_, meta_.number), &file_);
      if (!s.ok()) return s;
      builder_ = std::make_unique<sstable::TableBuilder>(options_.table, file_.get());
      if (sidecars_) sidecar_ = sidecars_();
    }
    builder_->Add(key, value);
    if (sidecar_ != nullptr) sidecar_->Add(key, value);
    return builder_->status();
  }
  bool Full() const { return builder_ != nullptr && builder_->FileSize() >= options_.target_file_size; }

  Status Finish() {
    if (builder_ == nullptr) return Status::OK();
    Status s = builder_->Finish();
    if (s.ok()) s = file_->Sync();
    Status c = file_->Close();
    if (s.ok()) s = c;
    if (s.ok() && sidecar_ != nullptr) s = sidecar_->Finish(meta_.number);
    if (s.ok()) {
      meta_.file_size = builder_->FileSize();
      meta_.entries = builder_->properties().entries;
      meta_.smallest = builder_->properties().smallest;
      meta_.largest = builder_->properties().largest;
      outputs_.push_back(meta_);
      bytes_written_ += meta_.file_size;
    }
    builder_.reset();
    sidecar_.reset();
    file_.reset();
    return s;
  }

  const std::vector<FileMeta>& outputs() const { return outputs_; }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  Env* const env_;
  const std::string& dbname_;
  const CompactionOptions& options_;
  const std::function<uint64_t()>& new_file_number_;
  const SidecarFactory& sidecars_;
  std::unique_ptr<WritableFile> file_;
  std::unique_ptr<sstable::TableBuilder> builder_;
  std::unique_ptr<TableSidecar> sidecar_;
  FileMeta meta_;
  std::vector<FileMeta> outputs_;
  uint64_t bytes_written_ = 0;
};

}  // namespace

Status RunCompaction(const Compaction& c, const Version& v, Env* env, const std::string& dbname,
                     TableCache* cache, const CompactionOptions& options, SequenceNumber smallest_snapshot,
                     const std::function<uint64_t()>& new_file_number, VersionEdit* edit,
                     CompactionStats* stats, const SidecarFactory& sidecars) {
  const int out_level = c.output_level;
  for (int i = 0; i < 2; i++) {
    for (const auto& f : c.inputs[i]) {
      edit->DeleteFile(c.level + i, f->number);
      stats->bytes_read += f->file_size;
    }
  }
  if (c.trivial_move) {
    edit->new_files.emplace_back(out_level, c.inputs[0][0]);
    return Status::OK();
  }

  std::vector<std::unique_ptr<InternalIterator>> children;
  if (c.level == 0) {
    for (const auto& f : c.inputs[0]) children.push_back(NewLevelIterator(cache, {f}));
  } else {
    children.push_back(NewLevelIterator(cache, c.inputs[0]));
  }
  if (!c.inputs[1].empty()) children.push_back(NewLevelIterator(cache, c.inputs[1]));
  MergingIterator input(std::move(children));

  // A deletion may go once no deeper level (below the output) can hold an
  // older version of its key.
  auto nothing_below = [&](std::string_view user_key) {
    for (int level = out_level + 1; level < kNumLevels; level++) {
      for (const auto& f : v.files[level]) {
        if (CompareUserKeys(user_key, ExtractUserKey(f->smallest)) >= 0 &&
            CompareUserKeys(user_key, ExtractUserKey(f->largest)) <= 0) {
          return false;
        }
      }
    }
    return true;
  };

  OutputWriter out(env, dbname, options, new_file_number, sidecars);
  std::string current_user_key;
  bool has_current = false;
  SequenceNumber last_sequence_for_key = kMaxSequenceNumber;
  Status s;
  for (input.SeekToFirst(); input.Valid() && s.ok(); input.Next()) {
    std::string_view key = input.key();
    std::string_view user_key = ExtractUserKey(key);
    const uint64_t tag = ExtractTag(key);
    const bool new_user_key = !has_current || user_key != current_user_key;
    if (new_user_key) {
      // Outputs split only between user keys, so that the tables of one
      // level never share a user key.
      if (out.Full()) s = out.Finish();
      current_user_key.assign(user_key);
      has_current = true;
      last_sequence_for_key = kMaxSequenceNumber;
    }
    bool drop = false;
    if (last_sequence_for_key <= smallest_snapshot) {
      drop = true;  // a newer version of this key is visible to every reader
    } else if (TagType(tag) == ValueType::kDeletion && TagSequence(tag) <= smallest_snapshot &&
               nothing_below(user_key)) {
      drop = true;  // deletes nothing any reader could still see
    }
    last_sequence_for_key = TagSequence(tag);
    if (drop) {
      stats->entries_dropped++;
      continue;
    }
    if (s.ok()) s = out.Add(key, input.value());
  }
  if (s.ok()) s = input.status();
  if (s.ok()) s = out.Finish();
  if (s.ok() && !out.outputs().empty()) s = env->SyncDir(dbname);
  if (!s.ok()) {
    for (const auto& f : out.outputs()) (void)env->RemoveFile(TableFileName(dbname, f.number));
    return s;
  }
  for (const auto& f : out.outputs()) edit->AddFile(out_level, f);
  stats->bytes_written += out.bytes_written();
  return Status::OK();
}

}  // namespace kvstore
