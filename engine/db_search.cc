#include "engine/db_search.h"

#include <chrono>
#include <cmath>

#include "engine/coding/internal_key.h"
#include "engine/filename.h"
#include "engine/memtable/memtable.h"
#include "engine/sstable/table.h"
#include "engine/version/table_cache.h"
#include "engine/write_batch_internal.h"
#include "index/analyzer.h"
#include "index/mem_index.h"
#include "index/query.h"
#include "index/segment.h"
#include "kvstore/embedder.h"

namespace kvstore {

namespace {

uint64_t NowMicros() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

void ToSearchHits(std::vector<index::Hit>* in, std::vector<SearchHit>* out) {
  out->clear();
  out->reserve(in->size());
  for (index::Hit& h : *in) {
    SearchHit hit;
    hit.key = std::move(h.key);
    hit.score = h.score;
    if (h.has_value) hit.value = std::move(h.value);
    out->push_back(std::move(hit));
  }
}

}  // namespace

std::string IndexFileName(const std::string& dbname, uint64_t number) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "/%06" PRIu64 ".idx", number);
  return dbname + buf;
}

bool ParseIndexFileName(std::string_view name, uint64_t* number) {
  return ParseNumberedFileName(name, ".idx", number);
}

// Writes the segment of one table from the entries the table receives.
// Docs already analysed (by the memtable's index, or in a compaction input's
// segment) are reused as they are: analysis and embedding happen once per
// written value, not once per rewrite.
class DBSearch::Sidecar final : public TableSidecar {
 public:
  using Finder = std::function<bool(std::string_view key, uint64_t seq, index::AnalyzedDoc* doc)>;

  Sidecar(DBSearch* search, Finder finder) : search_(search), finder_(std::move(finder)), writer_(*search->config_) {}

  void Add(std::string_view internal_key, std::string_view value) override {
    if (!status_.ok()) return;
    const uint64_t tag = ExtractTag(internal_key);
    if (TagType(tag) != ValueType::kValue) return;
    const std::string_view key = ExtractUserKey(internal_key);
    if (!search_->Indexed(key)) return;
    const uint64_t start = NowMicros();
    index::AnalyzedDoc doc;
    if (!finder_ || !finder_(key, TagSequence(tag), &doc)) {
      status_ = search_->AnalyzeOne(key, TagSequence(tag), value, &doc);
    }
    if (status_.ok()) writer_.Add(std::move(doc));
    micros_ += NowMicros() - start;
  }

  Status Finish(uint64_t number) override {
    if (!status_.ok()) return status_;
    const uint64_t start = NowMicros();
    const std::string path = IndexFileName(search_->dbname_, number);
    // A fresh file, never the old one rewritten in place: a checkpoint may
    // hold a hard link to the old one (a rebuild after a configuration
    // change), and must keep it as it was.
    (void)search_->env_->RemoveFile(path);
    std::string contents;
    Status s = writer_.Finish(&contents);
    std::unique_ptr<WritableFile> file;
    if (s.ok()) s = search_->env_->NewWritableFile(path, &file);
    if (s.ok()) s = file->Append(contents);
    if (s.ok()) s = file->Sync();
    if (file != nullptr) {
      Status c = file->Close();
      if (s.ok()) s = c;
    }
    // Held from now on: the first query after a flush should not pay for
    // reading back what was just written.
    std::shared_ptr<index::Segment> segment;
    if (s.ok()) s = index::Segment::OpenContents(std::move(contents), path, &segment);
    if (!s.ok()) {
      (void)search_->env_->RemoveFile(path);
      return s;
    }
    search_->RecordBuild(writer_.docs(), micros_ + NowMicros() - start);
    std::lock_guard lock(search_->mu_);
    search_->segments_[number] = std::move(segment);
    return Status::OK();
  }

 private:
  DBSearch* const search_;
  const Finder finder_;
  index::SegmentWriter writer_;
  Status status_;
  uint64_t micros_ = 0;
};

DBSearch::DBSearch(Env* env, std::string dbname) : env_(env), dbname_(std::move(dbname)) {}
DBSearch::~DBSearch() = default;

Status DBSearch::Create(const Options& options, Env* env, const std::string& dbname,
                        std::unique_ptr<DBSearch>* out) {
  out->reset();
  if (!options.search.enabled) return Status::OK();
  std::unique_ptr<DBSearch> search(new DBSearch(env, dbname));
  auto config = std::make_unique<index::IndexConfig>();
  config->analyzer.stemmer_language = options.search.stemmer_language;
  config->analyzer.stop_words = options.search.stop_words;
  config->prefixes = options.search.prefixes;
  search->excluded_prefixes_ = options.search.excluded_prefixes;
  if (options.search.semantic) {
    search->embedder_ = options.search.embedder != nullptr ? options.search.embedder : NewHashingEmbedder();
    if (search->embedder_->dimension() <= 0) {
      return Status::InvalidArgument("search: the embedder's dimension must be positive");
    }
    config->embedder_name = search->embedder_->name();
    config->dimension = search->embedder_->dimension();
  }
  Status s = index::Analyzer::Create(config->analyzer, &search->analyzer_);
  if (!s.ok()) return s;
  search->fingerprint_ = config->Fingerprint();
  search->config_ = std::move(config);
  *out = std::move(search);
  return Status::OK();
}

bool DBSearch::Indexed(std::string_view key) const {
  for (const std::string& p : excluded_prefixes_) {
    if (key.starts_with(p)) return false;
  }
  return index::KeyIndexed(*config_, key);
}

Status DBSearch::AnalyzeOne(std::string_view key, uint64_t seq, std::string_view value,
                            index::AnalyzedDoc* doc) const {
  return index::AnalyzeDoc(*analyzer_, embedder_.get(), key, seq, value, doc);
}

void DBSearch::AnalyzeBatch(const WriteBatch& batch, BatchDocs* out) const {
  struct Handler final : WriteBatch::Handler {
    const DBSearch* search;
    BatchDocs* out;
    uint64_t position = 0;
    void Put(std::string_view key, std::string_view value) override {
      if (search->Indexed(key)) {
        index::AnalyzedDoc doc;
        // An embedder that fails leaves the doc without a vector: the write
        // goes on, found by the other indexes.
        if (!search->AnalyzeOne(key, position, value, &doc).ok()) doc.vector.clear();
        out->docs.push_back(std::move(doc));
      }
      position++;
    }
    void Delete(std::string_view) override { position++; }
  } handler;
  handler.search = this;
  handler.out = out;
  (void)batch.Iterate(&handler);  // the batch was validated before this
}

void DBSearch::AddToMemIndex(BatchDocs* docs, uint64_t first_seq, MemTable* mem) {
  index::MemIndex* mem_index = mem->search_index().get();
  if (mem_index == nullptr) return;
  for (index::AnalyzedDoc& doc : docs->docs) {
    doc.seq += first_seq;
    mem_index->Add(std::move(doc));
  }
  docs->docs.clear();
}

void DBSearch::IndexReplayedBatch(const WriteBatch& batch, MemTable* mem) const {
  BatchDocs docs;
  AnalyzeBatch(batch, &docs);
  AddToMemIndex(&docs, WriteBatchInternal::Sequence(batch), mem);
}

void DBSearch::AttachMemIndex(MemTable* mem) const {
  mem->set_search_index(std::make_shared<index::MemIndex>(*config_));
}

size_t DBSearch::MemIndexBytes(const MemTable& mem) {
  return mem.search_index() != nullptr ? mem.search_index()->MemoryUsage() : 0;
}

SidecarFactory DBSearch::ForFlush(std::shared_ptr<MemTable> mem) {
  return [this, mem = std::move(mem)] {
    std::shared_ptr<index::MemIndex> mem_index = mem->search_index();
    Sidecar::Finder finder;
    if (mem_index != nullptr) {
      finder = [mem_index](std::string_view key, uint64_t seq, index::AnalyzedDoc* doc) {
        return mem_index->FindDoc(key, seq, doc);
      };
    }
    return std::unique_ptr<TableSidecar>(new Sidecar(this, std::move(finder)));
  };
}

SidecarFactory DBSearch::ForCompaction(const Compaction& c) {
  auto inputs = std::make_shared<std::vector<std::shared_ptr<index::Segment>>>();
  for (const auto& level : c.inputs) {
    for (const auto& f : level) {
      std::shared_ptr<index::Segment> segment;
      // A segment that cannot be loaded only costs re-analysis.
      if (GetSegment(f->number, &segment).ok()) inputs->push_back(std::move(segment));
    }
  }
  return [this, inputs] {
    auto finder = [inputs](std::string_view key, uint64_t seq, index::AnalyzedDoc* doc) {
      for (const auto& segment : *inputs) {
        if (segment->FindDoc(key, seq, doc)) return true;
      }
      return false;
    };
    return std::unique_ptr<TableSidecar>(new Sidecar(this, std::move(finder)));
  };
}

Status DBSearch::LoadSegment(uint64_t number, std::shared_ptr<index::Segment>* out) {
  const std::string path = IndexFileName(dbname_, number);
  uint64_t size = 0;
  Status s = env_->GetFileSize(path, &size);
  std::unique_ptr<RandomAccessFile> file;
  if (s.ok()) s = env_->NewRandomAccessFile(path, &file);
  if (s.ok()) s = index::Segment::Open(std::move(file), size, path, out);
  if (s.ok() && (*out)->fingerprint() != fingerprint_) {
    out->reset();
    return Status::InvalidArgument(path + ": built with another index configuration");
  }
  return s;
}

Status DBSearch::GetSegment(uint64_t number, std::shared_ptr<index::Segment>* out) {
  {
    std::lock_guard lock(mu_);
    auto it = segments_.find(number);
    if (it != segments_.end()) {
      *out = it->second;
      return Status::OK();
    }
  }
  Status s = LoadSegment(number, out);
  if (!s.ok()) return s;
  std::lock_guard lock(mu_);
  segments_.emplace(number, *out);
  return Status::OK();
}

void DBSearch::Evict(uint64_t number) {
  std::lock_guard lock(mu_);
  segments_.erase(number);
}

Status DBSearch::EnsureSegments(const Version& v, TableCache* tables) {
  bool built = false;
  for (const auto& level : v.files) {
    for (const auto& f : level) {
      std::shared_ptr<index::Segment> segment;
      if (GetSegment(f->number, &segment).ok()) continue;
      std::shared_ptr<const sstable::Table> table;
      Status s = tables->Find(f->number, f->file_size, &table);
      if (!s.ok()) return s;
      Sidecar sidecar(this, {});
      std::unique_ptr<InternalIterator> it = table->NewIterator();
      for (it->SeekToFirst(); it->Valid(); it->Next()) sidecar.Add(it->key(), it->value());
      s = it->status();
      if (s.ok()) s = sidecar.Finish(f->number);
      if (!s.ok()) return s;
      built = true;
    }
  }
  return built ? env_->SyncDir(dbname_) : Status::OK();
}

void DBSearch::RecordBuild(uint64_t docs, uint64_t micros) {
  std::lock_guard lock(mu_);
  segments_built_++;
  docs_indexed_ += docs;
  build_micros_ += micros;
}

DBSearch::Stats DBSearch::GetStats() const {
  std::lock_guard lock(mu_);
  Stats st;
  st.segments = segments_.size();
  for (const auto& [number, segment] : segments_) st.segment_bytes += segment->MemoryUsage();
  st.segments_built = segments_built_;
  st.docs_indexed = docs_indexed_;
  st.build_micros = build_micros_;
  return st;
}

Status DBSearch::Sources(const std::vector<const MemTable*>& mems, const Version& v,
                         std::vector<std::shared_ptr<index::Segment>>* pinned,
                         std::vector<const index::IndexSource*>* sources) {
  for (const MemTable* mem : mems) {
    if (mem->search_index() != nullptr) sources->push_back(mem->search_index().get());
  }
  for (const auto& level : v.files) {
    for (const auto& f : level) {
      std::shared_ptr<index::Segment> segment;
      Status s = GetSegment(f->number, &segment);
      if (!s.ok()) return s;
      sources->push_back(segment.get());
      pinned->push_back(std::move(segment));
    }
  }
  return Status::OK();
}

Status DBSearch::SearchByValue(const std::vector<const MemTable*>& mems, const Version& v, uint64_t seq,
                               std::string_view value, const ValueSearchOptions& options, const LiveCheck& live,
                               std::vector<SearchHit>* hits) {
  std::vector<std::shared_ptr<index::Segment>> pinned;
  std::vector<const index::IndexSource*> sources;
  Status s = Sources(mems, v, &pinned, &sources);
  if (!s.ok()) return s;
  std::vector<index::Hit> found;
  s = index::ExactSearch(sources, value, seq, options.limit, options.include_values, live, &found);
  if (s.ok()) ToSearchHits(&found, hits);
  return s;
}

Status DBSearch::FullTextSearch(const std::vector<const MemTable*>& mems, const Version& v, uint64_t seq,
                                std::string_view query, const FullTextOptions& options, const LiveCheck& live,
                                std::vector<SearchHit>* hits) {
  std::vector<std::shared_ptr<index::Segment>> pinned;
  std::vector<const index::IndexSource*> sources;
  Status s = Sources(mems, v, &pinned, &sources);
  if (!s.ok()) return s;
  std::vector<index::Hit> found;
  s = index::FullTextSearch(sources, *analyzer_, query, options.mode == MatchMode::kAllTerms, seq, options.limit,
                            options.include_values, live, &found);
  if (s.ok()) ToSearchHits(&found, hits);
  return s;
}

Status DBSearch::SemanticSearch(const std::vector<const MemTable*>& mems, const Version& v, uint64_t seq,
                                std::string_view text, const std::vector<float>* vector,
                                const SemanticOptions& options, const LiveCheck& live,
                                std::vector<SearchHit>* hits) {
  if (embedder_ == nullptr) return Status::NotSupported("semantic search is off (Options::search.semantic)");
  std::vector<float> query;
  if (vector != nullptr) {
    if (static_cast<int>(vector->size()) != embedder_->dimension()) {
      return Status::InvalidArgument("the query vector has " + std::to_string(vector->size()) +
                                     " dimensions; the index has " + std::to_string(embedder_->dimension()));
    }
    double norm = 0;
    for (float x : *vector) {
      if (!std::isfinite(x)) return Status::InvalidArgument("the query vector holds a NaN or infinity");
      norm += static_cast<double>(x) * x;
    }
    if (norm == 0) return Status::InvalidArgument("the query vector is all zeros");
    query = *vector;
    const float scale = static_cast<float>(1 / std::sqrt(norm));
    for (float& x : query) x *= scale;
  } else {
    std::vector<std::vector<float>> vectors;
    Status s = embedder_->Embed({text}, &vectors);
    if (!s.ok()) return s;
    if (vectors.size() != 1) return Status::IOError("the embedder returned no vector");
    query = std::move(vectors[0]);
  }
  std::vector<std::shared_ptr<index::Segment>> pinned;
  std::vector<const index::IndexSource*> sources;
  Status s = Sources(mems, v, &pinned, &sources);
  if (!s.ok()) return s;
  std::vector<index::Hit> found;
  s = index::SemanticSearch(sources, query, options.k, options.threshold, seq, options.include_values, live, &found);
  if (s.ok()) ToSearchHits(&found, hits);
  return s;
}

}  // namespace kvstore
