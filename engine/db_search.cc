#include "engine/db_search.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>

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
  // A doc the writer may use in place until Finish: null when absent.
  using Borrower = std::function<const index::AnalyzedDoc*(std::string_view key, uint64_t seq)>;

  Sidecar(DBSearch* search, Finder finder, Borrower borrower = {})
      : search_(search), finder_(std::move(finder)), borrower_(std::move(borrower)), writer_(*search->config_) {}

  void Add(std::string_view internal_key, std::string_view value) override {
    if (!status_.ok()) return;
    const uint64_t tag = ExtractTag(internal_key);
    if (TagType(tag) != ValueType::kValue) return;
    const std::string_view key = ExtractUserKey(internal_key);
    if (!search_->Indexed(key)) return;
    const uint64_t start = NowMicros();
    if (borrower_) {
      if (const index::AnalyzedDoc* found = borrower_(key, TagSequence(tag))) {
        writer_.AddBorrowed(found);
        micros_ += NowMicros() - start;
        return;
      }
    }
    index::AnalyzedDoc doc;
    if (!finder_ || !finder_(key, TagSequence(tag), &doc)) {
      status_ = search_->AnalyzeOne(key, TagSequence(tag), value, &doc);
    }
    if (status_.ok() && search_->async_ && doc.vector.empty() && doc.length > 0) search_->FillOrEnqueue(&doc);
    if (status_.ok()) writer_.Add(std::move(doc));
    micros_ += NowMicros() - start;
  }

  Status Finish(uint64_t number) override {
    if (!status_.ok()) return status_;
    const uint64_t start = NowMicros();
    std::shared_ptr<index::Segment> segment;
    Status s = search_->WriteSegmentFile(number, &writer_, /*replace=*/false, &segment);
    if (!s.ok()) return s;
    search_->RecordBuild(writer_.docs(), micros_ + NowMicros() - start);
    std::lock_guard lock(search_->mu_);
    search_->segments_[number] = std::move(segment);
    return Status::OK();
  }

 private:
  DBSearch* const search_;
  const Finder finder_;
  const Borrower borrower_;  // holds what it lends alive: declared before writer_, destroyed after it
  index::SegmentWriter writer_;
  Status status_;
  uint64_t micros_ = 0;
};

DBSearch::DBSearch(Env* env, std::string dbname) : env_(env), dbname_(std::move(dbname)) {}
DBSearch::~DBSearch() {
  StopEmbedding();
  if (helper_thread_.joinable()) {
    {
      std::lock_guard lock(helper_mu_);
      helper_stop_ = true;
    }
    helper_cv_.notify_all();
    helper_thread_.join();
  }
}

Status DBSearch::WriteSegmentFile(uint64_t number, index::SegmentWriter* writer, bool replace,
                                  std::shared_ptr<index::Segment>* out) {
  const std::string path = IndexFileName(dbname_, number);
  // A fresh file, never the old one rewritten in place: a checkpoint may
  // hold a hard link to the old one, and must keep it as it was. A
  // replacement goes through a rename, so that the table is never without
  // a complete segment (a checkpoint linking it meanwhile gets one or the
  // other).
  const std::string target = replace ? path + ".tmp" : path;
  (void)env_->RemoveFile(target);
  std::string contents;
  Status s = writer->Finish(&contents);
  std::unique_ptr<WritableFile> file;
  if (s.ok()) s = env_->NewWritableFile(target, &file);
  if (s.ok()) s = file->Append(contents);
  if (s.ok()) s = file->Sync();
  if (file != nullptr) {
    Status c = file->Close();
    if (s.ok()) s = c;
  }
  if (s.ok() && replace) {
    s = env_->RenameFile(target, path);
    if (s.ok()) s = env_->SyncDir(dbname_);
  }
  // Held from now on: the first query after a flush should not pay for
  // reading back what was just written.
  if (s.ok()) s = index::Segment::OpenContents(std::move(contents), path, out);
  if (!s.ok()) {
    (void)env_->RemoveFile(target);
    return s;
  }
  return Status::OK();
}

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
    search->async_ = !search->embedder_->synchronous();
    config->embedder_name = search->embedder_->name();
    config->dimension = search->embedder_->dimension();
  }
  Status s = index::Analyzer::Create(config->analyzer, &search->analyzer_);
  if (!s.ok()) return s;
  search->fingerprint_ = config->Fingerprint();
  search->config_ = std::move(config);
  // A writer's analysis is most of an indexed write's cost and runs on its
  // own thread; with a second core, the helper analyses part of each big
  // batch alongside it.
  if (std::thread::hardware_concurrency() >= 2) {
    DBSearch* raw = search.get();
    search->helper_thread_ = std::thread([raw] { raw->HelperLoop(); });
  }
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
  Status s = index::AnalyzeDoc(*analyzer_, async_ ? nullptr : embedder_.get(), key, seq, value, doc);
  // An embedder that embeds no text (NewClientVectorsEmbedder): the doc is
  // found by the other indexes, and by vector only when a put brought one.
  if (s.IsNotSupported()) {
    doc->vector.clear();
    return Status::OK();
  }
  return s;
}

// One indexed Put of a batch, to analyse.
struct DBSearch::PendingPut {
  std::string_view key;
  std::string_view value;
  std::vector<float> vector;  // PutWithVector's (a copy: Iterate's span lasts only for the call)
  bool with_vector = false;
  uint64_t position = 0;          // in the batch
};

namespace {

// From this many indexed puts on, a batch's analysis is shared with the
// helper thread; docs are handed out kAnalysisChunk at a time.
constexpr size_t kSharedAnalysisDocs = 32;
constexpr size_t kAnalysisChunk = 8;

}  // namespace

// A batch's analysis, shared by its writer and the helper thread: each takes
// the next chunk of puts from a counter until none are left. The writer
// waits only for the chunks the helper took, never for the helper to come
// round to the batch (it may be busy with another writer's, or not
// scheduled at all on a loaded machine): then the writer does them all.
struct DBSearch::AnalysisJob {
  const DBSearch* search = nullptr;
  std::vector<PendingPut> puts;
  index::AnalyzedDoc* docs = nullptr;  // puts.size() of them, the writer's
  size_t chunks = 0;
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  std::mutex mu;
  std::condition_variable cv;

  void Work() {
    for (size_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      const size_t end = std::min(puts.size(), (c + 1) * kAnalysisChunk);
      for (size_t i = c * kAnalysisChunk; i < end; i++) search->AnalyzePut(puts[i], &docs[i]);
      if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
        std::lock_guard lock(mu);
        cv.notify_all();
      }
    }
  }
};

void DBSearch::AnalyzePut(const PendingPut& put, index::AnalyzedDoc* doc) const {
  if (put.with_vector) {
    // The client's vector replaces the embedder's (which is not asked).
    (void)index::AnalyzeDoc(*analyzer_, nullptr, put.key, put.position, put.value, doc);
    if (embedder_ != nullptr) SetClientVector(put.vector, doc);
    return;
  }
  // An embedder that fails leaves the doc without a vector: the write goes
  // on, found by the other indexes.
  if (!AnalyzeOne(put.key, put.position, put.value, doc).ok()) doc->vector.clear();
}

void DBSearch::HelperLoop() {
  std::unique_lock lock(helper_mu_);
  for (;;) {
    helper_cv_.wait(lock, [this] { return helper_stop_ || !helper_jobs_.empty(); });
    if (helper_stop_) return;
    std::shared_ptr<AnalysisJob> job = std::move(helper_jobs_.front());
    helper_jobs_.pop_front();
    lock.unlock();
    job->Work();
    lock.lock();
  }
}

void DBSearch::AnalyzeBatch(const WriteBatch& batch, BatchDocs* out) const {
  struct Handler final : WriteBatch::Handler {
    const DBSearch* search;
    std::vector<PendingPut>* puts;
    uint64_t position = 0;
    void Put(std::string_view key, std::string_view value) override {
      if (search->Indexed(key)) puts->push_back(PendingPut{key, value, {}, false, position});
      position++;
    }
    void PutWithVector(std::string_view key, std::string_view value, std::span<const float> vector) override {
      if (search->Indexed(key)) {
        puts->push_back(PendingPut{key, value, std::vector<float>(vector.begin(), vector.end()), true, position});
      }
      position++;
    }
    void Delete(std::string_view) override { position++; }
  } handler;
  auto job = std::make_shared<AnalysisJob>();
  handler.search = this;
  handler.puts = &job->puts;
  (void)batch.Iterate(&handler);  // the batch was validated before this
  const size_t n = job->puts.size();
  out->docs.resize(n);
  if (n < kSharedAnalysisDocs || !helper_thread_.joinable()) {
    for (size_t i = 0; i < n; i++) AnalyzePut(job->puts[i], &out->docs[i]);
    return;
  }
  job->search = this;
  job->docs = out->docs.data();
  job->chunks = (n + kAnalysisChunk - 1) / kAnalysisChunk;
  {
    std::lock_guard lock(helper_mu_);
    helper_jobs_.push_back(job);
  }
  helper_cv_.notify_one();
  job->Work();
  std::unique_lock lock(job->mu);
  job->cv.wait(lock, [&] { return job->done.load(std::memory_order_acquire) == job->chunks; });
}

void DBSearch::SetClientVector(std::span<const float> vector, index::AnalyzedDoc* doc) const {
  // Validated already (finite, not all zeros, the index's dimension); a
  // replayed WAL of a store opened with another dimension is not.
  doc->vector.clear();
  if (static_cast<int>(vector.size()) != config_->dimension) return;
  double norm = 0;
  for (float x : vector) norm += static_cast<double>(x) * x;
  if (!(norm > 0) || !std::isfinite(norm)) return;
  const float scale = static_cast<float>(1 / std::sqrt(norm));
  doc->vector.reserve(vector.size());
  for (float x : vector) doc->vector.push_back(x * scale);
}

void DBSearch::AddToMemIndex(BatchDocs* docs, uint64_t first_seq, MemTable* mem) {
  index::MemIndex* mem_index = mem->search_index().get();
  if (mem_index == nullptr) return;
  std::vector<DocKey> later;  // docs to embed in the background
  for (index::AnalyzedDoc& doc : docs->docs) {
    doc.seq += first_seq;
    if (async_ && doc.length > 0 && doc.vector.empty()) later.emplace_back(doc.key, doc.seq);
    mem_index->Add(std::move(doc));
  }
  docs->docs.clear();
  if (later.empty()) return;
  std::lock_guard lock(backlog_mu_);
  for (const DocKey& k : later) EnqueueLocked(k.first, k.second);
}

void DBSearch::IndexReplayedBatch(const WriteBatch& batch, MemTable* mem) {
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
    Sidecar::Borrower borrower;
    if (mem_index != nullptr && !async_) {
      // Nothing changes a doc of the memtable's index without a background
      // embedder: the segment writer reads the docs in place (copying each,
      // with its 1 KiB vector, then freeing the copies cost ~1-2 us a doc).
      borrower = [mem_index](std::string_view key, uint64_t seq) { return mem_index->FindDocPointer(key, seq); };
    } else if (mem_index != nullptr) {
      // The background embedder may give a doc its vector meanwhile
      // (MemIndex::SetVector): copy under the index's lock.
      finder = [mem_index](std::string_view key, uint64_t seq, index::AnalyzedDoc* doc) {
        return mem_index->FindDoc(key, seq, doc);
      };
    }
    return std::unique_ptr<TableSidecar>(new Sidecar(this, std::move(finder), std::move(borrower)));
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
    // An output table receives its entries in table order: each input's
    // search goes on from where its last one ended (bisecting every input
    // for every entry was most of a compaction's lookups).
    auto cursors = std::make_shared<std::vector<size_t>>(inputs->size(), 0);
    auto finder = [inputs, cursors](std::string_view key, uint64_t seq, index::AnalyzedDoc* doc) {
      for (size_t i = 0; i < inputs->size(); i++) {
        if ((*inputs)[i]->FindDocFrom(key, seq, &(*cursors)[i], doc)) return true;
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
  // Leftovers of a segment rewrite that a crash interrupted.
  std::vector<std::string> children;
  if (env_->GetChildren(dbname_, &children).ok()) {
    for (const std::string& name : children) {
      if (name.size() > 8 && name.compare(name.size() - 8, 8, ".idx.tmp") == 0) (void)env_->RemoveFile(dbname_ + "/" + name);
    }
  }
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
  std::lock_guard backlog_lock(backlog_mu_);
  st.embedding_backlog = unsearchable_;
  st.docs_embedded = docs_embedded_;
  st.embedding_errors = embedding_errors_;
  st.embedding_last_error = embedding_last_error_;
  st.vector_rewrites = vector_rewrites_;
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

template <typename Query>
Status DBSearch::OverSources(const std::vector<const MemTable*>& mems, const Version& v, std::vector<SearchHit>* hits,
                             Query&& query) {
  std::vector<std::shared_ptr<index::Segment>> pinned;  // held until the query is done
  std::vector<const index::IndexSource*> sources;
  Status s = Sources(mems, v, &pinned, &sources);
  if (!s.ok()) return s;
  std::vector<index::Hit> found;
  s = query(sources, &found);
  if (s.ok()) ToSearchHits(&found, hits);
  return s;
}

Status DBSearch::SearchByValue(const std::vector<const MemTable*>& mems, const Version& v, uint64_t seq,
                               std::string_view value, const ValueSearchOptions& options, const LiveCheck& live,
                               std::vector<SearchHit>* hits) {
  return OverSources(mems, v, hits, [&](const auto& sources, std::vector<index::Hit>* found) {
    return index::ExactSearch(sources, value, seq, options.limit, options.include_values, live, found);
  });
}

Status DBSearch::FullTextSearch(const std::vector<const MemTable*>& mems, const Version& v, uint64_t seq,
                                std::string_view query, const FullTextOptions& options, const LiveCheck& live,
                                std::vector<SearchHit>* hits) {
  return OverSources(mems, v, hits, [&](const auto& sources, std::vector<index::Hit>* found) {
    return index::FullTextSearch(sources, *analyzer_, query, options.mode == MatchMode::kAllTerms, seq,
                                 options.limit, options.include_values, live, found);
  });
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
    // Not the caller's fault, whatever the embedder says (a wrong
    // dimension is InvalidArgument there), unless it embeds no text at all.
    if (s.IsNotSupported()) return s;
    if (!s.ok()) return Status::IOError("embedding the query: " + std::string(s.message()));
    if (vectors.size() != 1) return Status::IOError("the embedder returned no vector");
    query = std::move(vectors[0]);
  }
  return OverSources(mems, v, hits, [&](const auto& sources, std::vector<index::Hit>* found) {
    return index::SemanticSearch(sources, query, options.k, options.threshold, seq, options.include_values, live,
                                 found);
  });
}

// ---------------------------------------------------------------------------
// Background embedding (an embedder that is not synchronous; see db_search.h)

namespace {
// Docs per Embed call of the background thread (the embedder splits them
// into its own request batches).
constexpr size_t kEmbedRound = 256;
// How often vectors not yet placed for good (a segment rewrite failed, or a
// flush or compaction was running) are looked at again.
constexpr auto kPlaceInterval = std::chrono::seconds(1);
// While a long backlog drains, segments are rewritten with the vectors made
// so far at most this often (and at once when it is drained).
constexpr auto kRewriteInterval = std::chrono::seconds(30);
constexpr int kFirstBackoffMs = 100;
constexpr int kMaxBackoffMs = 5000;
}  // namespace

void DBSearch::SetSearchableLocked(PendingDoc* p, bool searchable) {
  if (p->searchable == searchable) return;
  p->searchable = searchable;
  if (searchable) {
    unsearchable_--;
  } else {
    unsearchable_++;
  }
}

void DBSearch::EnqueueLocked(std::string_view key, uint64_t seq) {
  auto [it, inserted] = pending_.try_emplace(DocKey(std::string(key), seq));
  if (!inserted) return;
  unsearchable_++;
  to_embed_.push_back(it->first);
  if (to_embed_.size() == 1) backlog_cv_.notify_one();
}

void DBSearch::FillOrEnqueue(index::AnalyzedDoc* doc) {
  std::lock_guard lock(backlog_mu_);
  auto it = pending_.find(std::make_pair(std::string_view(doc->key), doc->seq));
  if (it == pending_.end()) {
    EnqueueLocked(doc->key, doc->seq);
  } else if (it->second.vector != nullptr) {
    doc->vector = *it->second.vector;
  }
}

Status DBSearch::StartEmbedding(Host host) {
  if (!async_) return Status::OK();
  host_ = std::move(host);
  std::vector<std::shared_ptr<MemTable>> mems;
  std::shared_ptr<const Version> version;
  host_.view(&mems, &version);
  // Docs with text and no vector: written while the service was down, or
  // rewritten from their tables (EnsureSegments) since.
  std::vector<DocKey> missing;
  for (const auto& level : version->files) {
    for (const auto& f : level) {
      std::shared_ptr<index::Segment> segment;
      Status s = GetSegment(f->number, &segment);
      if (!s.ok()) return s;
      if (segment->dimension() <= 0) continue;
      segment->ForEachDoc([&](const index::AnalyzedDoc& d) {
        if (d.length > 0 && d.vector.empty()) missing.emplace_back(d.key, d.seq);
      });
    }
  }
  {
    std::lock_guard lock(backlog_mu_);
    for (const DocKey& k : missing) EnqueueLocked(k.first, k.second);
    stop_ = false;
  }
  embed_thread_ = std::thread([this] { EmbedLoop(); });
  return Status::OK();
}

void DBSearch::StopEmbedding() {
  {
    std::lock_guard lock(backlog_mu_);
    stop_ = true;
  }
  backlog_cv_.notify_all();
  if (embed_thread_.joinable()) embed_thread_.join();
}

void DBSearch::BeginRewrite() {
  if (!async_) return;
  std::lock_guard lock(mu_);
  active_rewrites_++;
  rewrite_epoch_++;
}

void DBSearch::EndRewrite() {
  if (!async_) return;
  {
    std::lock_guard lock(mu_);
    active_rewrites_--;
    rewrite_epoch_++;
  }
  {
    // A flush may have taken vectors out of a memtable: see where they went.
    std::lock_guard lock(backlog_mu_);
    wake_ = true;
  }
  backlog_cv_.notify_one();
}

void DBSearch::EmbedLoop() {
  int backoff_ms = 0;
  auto last_place = std::chrono::steady_clock::now();
  auto last_rewrite = last_place;
  for (;;) {
    bool have_work;
    {
      std::unique_lock lock(backlog_mu_);
      if (backoff_ms > 0) {
        backlog_cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms), [this] { return stop_; });
      } else if (to_embed_.empty() && !wake_) {
        const auto timeout = to_place_.empty() ? std::chrono::seconds(60) : kPlaceInterval;
        backlog_cv_.wait_for(lock, timeout, [this] { return stop_ || wake_ || !to_embed_.empty(); });
      }
      if (stop_) return;
      if (wake_) {
        // A flush or compaction ended: vectors placed in a memtable may
        // have gone into a segment (with them or without).
        to_place_.insert(to_place_.end(), std::make_move_iterator(in_memtable_.begin()),
                         std::make_move_iterator(in_memtable_.end()));
        in_memtable_.clear();
        wake_ = false;
      }
      have_work = !to_embed_.empty();
    }
    if (have_work) {
      if (EmbedSome()) {
        backoff_ms = 0;
      } else {
        backoff_ms = backoff_ms == 0 ? kFirstBackoffMs : std::min(backoff_ms * 2, kMaxBackoffMs);
      }
    }
    bool place, rewrite;
    {
      std::lock_guard lock(backlog_mu_);
      const auto now = std::chrono::steady_clock::now();
      // Vectors go where queries find them once the queue is drained, or at
      // least every interval; and while the service fails, those already
      // made need not wait for it. Segments are rewritten less often while
      // the queue drains: one rewrite for many vectors.
      const bool drained = to_embed_.empty() || backoff_ms > 0;
      place = !to_place_.empty() && (drained || now - last_place >= kPlaceInterval);
      rewrite = drained || now - last_rewrite >= kRewriteInterval;
    }
    if (place) {
      PlaceVectors(rewrite);
      last_place = std::chrono::steady_clock::now();
      if (rewrite) last_rewrite = last_place;
    }
  }
}

bool DBSearch::EmbedSome() {
  std::vector<DocKey> keys;
  {
    std::lock_guard lock(backlog_mu_);
    for (size_t i = 0; i < to_embed_.size() && i < kEmbedRound; i++) keys.push_back(to_embed_[i]);
  }
  // The values are read back now: a doc overwritten or deleted meanwhile
  // will never be a semantic hit, so it is not worth a request.
  std::vector<bool> dead(keys.size(), false);
  std::vector<std::string> texts;
  std::vector<size_t> text_of;  // keys index -> texts index
  Status s;
  for (size_t i = 0; i < keys.size() && s.ok(); i++) {
    bool live = false;
    std::string value;
    s = host_.live(keys[i].first, keys[i].second, &live, &value);
    text_of.push_back(texts.size());
    if (!s.ok()) break;
    if (!live) {
      dead[i] = true;
      continue;
    }
    texts.emplace_back();
    index::ExtractText(value, &texts.back());
  }
  std::vector<std::vector<float>> vectors;
  if (s.ok() && !texts.empty()) {
    std::vector<std::string_view> views(texts.begin(), texts.end());
    s = embedder_->Embed(views, &vectors);
    if (s.ok() && vectors.size() != texts.size()) {
      s = Status::IOError("embedder " + embedder_->name() + " returned " + std::to_string(vectors.size()) +
                          " vectors for " + std::to_string(texts.size()) + " texts");
    }
    for (size_t i = 0; s.ok() && i < vectors.size(); i++) {
      if (vectors[i].size() != static_cast<size_t>(embedder_->dimension())) {
        s = Status::InvalidArgument("embedder " + embedder_->name() + " returned a vector of the wrong dimension");
      }
      for (float x : vectors[i]) {
        if (!std::isfinite(x)) s = Status::InvalidArgument("embedder " + embedder_->name() + " returned a non-finite value");
      }
    }
  }
  std::lock_guard lock(backlog_mu_);
  if (!s.ok()) {
    embedding_errors_++;
    embedding_last_error_ = s.ToString();
    return false;
  }
  // Only this thread takes from the front of to_embed_: it still starts
  // with keys.
  for (size_t i = 0; i < keys.size(); i++) {
    to_embed_.pop_front();
    auto it = pending_.find(keys[i]);
    if (it == pending_.end()) continue;
    std::vector<float>* v = dead[i] ? nullptr : &vectors[text_of[i]];
    const bool features = v != nullptr && std::any_of(v->begin(), v->end(), [](float x) { return x != 0.0f; });
    if (!features) {
      // Dead, or nothing to attach (a doc without features has no vector).
      SetSearchableLocked(&it->second, true);
      pending_.erase(it);
      continue;
    }
    it->second.vector = std::make_shared<const std::vector<float>>(std::move(*v));
    to_place_.push_back(keys[i]);
  }
  docs_embedded_ += texts.size();
  return true;
}

void DBSearch::PlaceVectors(bool rewrite) {
  struct Item {
    DocKey key;
    std::shared_ptr<const std::vector<float>> vector;
  };
  std::vector<Item> items;
  {
    std::lock_guard lock(backlog_mu_);
    for (DocKey& k : to_place_) {
      auto it = pending_.find(k);
      if (it != pending_.end()) items.push_back(Item{std::move(k), it->second.vector});
    }
    to_place_.clear();
  }
  uint64_t epoch;
  int active;
  {
    std::lock_guard lock(mu_);
    epoch = rewrite_epoch_;
    active = active_rewrites_;
  }
  std::vector<std::shared_ptr<MemTable>> mems;
  std::shared_ptr<const Version> version;
  host_.view(&mems, &version);

  enum class Where { kUnknown, kMemTable, kSegment, kSegmentWithout, kGone };
  std::vector<Where> where(items.size(), Where::kGone);
  std::map<uint64_t, std::vector<size_t>> rewrites;  // table number -> items lacking their vector there
  for (size_t i = 0; i < items.size(); i++) {
    const auto& [key, seq] = items[i].key;
    bool found = false;
    for (const auto& mem : mems) {
      if (mem->search_index() != nullptr && mem->search_index()->SetVector(key, seq, *items[i].vector)) {
        where[i] = Where::kMemTable;
        found = true;
        break;
      }
    }
    for (const auto& level : version->files) {
      if (found) break;
      for (const auto& f : level) {
        if (CompareUserKeys(key, ExtractUserKey(f->smallest)) < 0 ||
            CompareUserKeys(key, ExtractUserKey(f->largest)) > 0) {
          continue;
        }
        std::shared_ptr<index::Segment> segment;
        if (!GetSegment(f->number, &segment).ok()) {
          where[i] = Where::kUnknown;
          continue;
        }
        index::AnalyzedDoc doc;
        if (!segment->FindDoc(key, seq, &doc)) continue;
        found = true;
        if (doc.vector.empty()) {
          where[i] = Where::kSegmentWithout;
          rewrites[f->number].push_back(i);
        } else {
          where[i] = Where::kSegment;
        }
        break;
      }
    }
  }
  Status failed;
  if (!rewrite) rewrites.clear();  // kSegmentWithout: kept for a later pass
  for (const auto& [number, list] : rewrites) {
    Status s = RewriteWithVectors(number);
    if (!s.ok()) {
      failed = s;
      continue;
    }
    for (size_t i : list) where[i] = Where::kSegment;
  }

  bool may_forget;
  {
    std::lock_guard lock(mu_);
    may_forget = active == 0 && active_rewrites_ == 0 && rewrite_epoch_ == epoch;
  }
  std::lock_guard lock(backlog_mu_);
  if (!failed.ok()) {
    embedding_errors_++;
    embedding_last_error_ = failed.ToString();
  }
  for (size_t i = 0; i < items.size(); i++) {
    auto it = pending_.find(items[i].key);
    if (it == pending_.end()) continue;
    switch (where[i]) {
      case Where::kMemTable:
        // Searchable, but kept until a flush has put it into a segment.
        SetSearchableLocked(&it->second, true);
        in_memtable_.push_back(std::move(items[i].key));
        continue;
      case Where::kSegment:
        SetSearchableLocked(&it->second, true);
        // Final unless a flush or compaction that began before the segment
        // had the vector may still install a copy of the doc without it.
        if (may_forget) {
          pending_.erase(it);
          continue;
        }
        break;
      case Where::kSegmentWithout:
        SetSearchableLocked(&it->second, false);
        break;
      case Where::kGone:
        // Dropped by a compaction: nothing left to attach it to.
        SetSearchableLocked(&it->second, true);
        pending_.erase(it);
        continue;
      case Where::kUnknown:
        break;
    }
    to_place_.push_back(std::move(items[i].key));
  }
}

Status DBSearch::RewriteWithVectors(uint64_t number) {
  std::shared_ptr<index::Segment> old;
  Status s = GetSegment(number, &old);
  if (!s.ok()) return s;
  const uint64_t start = NowMicros();
  index::SegmentWriter writer(*config_);
  old->ForEachDoc([&](const index::AnalyzedDoc& d) {
    index::AnalyzedDoc doc = d;
    if (doc.vector.empty() && doc.length > 0) {
      std::lock_guard lock(backlog_mu_);
      auto it = pending_.find(std::make_pair(std::string_view(doc.key), doc.seq));
      if (it != pending_.end() && it->second.vector != nullptr) doc.vector = *it->second.vector;
    }
    writer.Add(std::move(doc));
  });
  std::shared_ptr<index::Segment> segment;
  s = WriteSegmentFile(number, &writer, /*replace=*/true, &segment);
  if (!s.ok()) return s;
  bool live;
  {
    std::lock_guard lock(mu_);
    auto it = segments_.find(number);
    live = it != segments_.end();
    if (live) it->second = std::move(segment);
  }
  if (!live) {
    // Its table went while this ran (Evict comes before the file's removal,
    // so this file may have come after it): no orphan left behind.
    (void)env_->RemoveFile(IndexFileName(dbname_, number));
    return Status::OK();
  }
  RecordBuild(0, NowMicros() - start);
  std::lock_guard lock(backlog_mu_);
  vector_rewrites_++;
  return Status::OK();
}

}  // namespace kvstore
