#include "index/mem_index.h"

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <shared_mutex>

#include "engine/coding/checksum.h"

namespace kvstore::index {

MemIndex::RwLock::RwLock() {
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&rw_, &attr);
  pthread_rwlockattr_destroy(&attr);
}

MemIndex::RwLock::~RwLock() { pthread_rwlock_destroy(&rw_); }

MemIndex::MemIndex(const IndexConfig& config) : dimension_(config.dimension), slots_(1024, Slot{0, 0}) {}

uint64_t MemIndex::KeyHash(std::string_view key, uint64_t seq) {
  return Checksum64(key) ^ (seq * 0x9E3779B97F4A7C15ull);
}

int64_t MemIndex::FindLocked(std::string_view key, uint64_t seq, uint64_t hash) const {
  const size_t mask = slots_.size() - 1;
  const auto tag = static_cast<uint32_t>(hash);
  for (size_t i = tag & mask;; i = (i + 1) & mask) {
    const Slot slot = slots_[i];
    if (slot.id_plus_1 == 0) return -1;
    if (slot.hash != tag) continue;
    const AnalyzedDoc& d = docs_[slot.id_plus_1 - 1];
    if (d.seq == seq && d.key == key) return slot.id_plus_1 - 1;
  }
}

void MemIndex::Add(AnalyzedDoc doc) {
  if (!doc.vector.empty() && (dimension_ <= 0 || doc.vector.size() != static_cast<size_t>(dimension_))) {
    doc.vector.clear();
  }
  RoundToHalfPrecision(&doc.vector);  // as its segment will hold it
  // Approximate: the strings, the vector, and a per-entry overhead for each
  // map and list the doc lands in (once a query has built them).
  size_t bytes = sizeof(AnalyzedDoc) + 2 * doc.key.size() + 96 + doc.vector.size() * sizeof(float);
  for (const auto& [term, tf] : doc.terms) bytes += term.size() + 40 + sizeof(Posting);
  bytes += doc.term_hashes.size() * sizeof(uint32_t);
  const uint64_t hash = KeyHash(doc.key, doc.seq);

  std::unique_lock<RwLock> lock(mu_);
  if (FindLocked(doc.key, doc.seq, hash) >= 0) return;
  const auto id = static_cast<uint32_t>(docs_.size());
  if (2 * (docs_.size() + 1) > slots_.size()) {
    std::vector<Slot> bigger(slots_.size() * 2, Slot{0, 0});
    const size_t mask = bigger.size() - 1;
    for (const Slot& slot : slots_) {
      if (slot.id_plus_1 == 0) continue;
      size_t i = slot.hash & mask;
      while (bigger[i].id_plus_1 != 0) i = (i + 1) & mask;
      bigger[i] = slot;
    }
    slots_.swap(bigger);
  }
  const size_t mask = slots_.size() - 1;
  size_t i = static_cast<uint32_t>(hash) & mask;
  while (slots_[i].id_plus_1 != 0) i = (i + 1) & mask;
  slots_[i] = Slot{id + 1, static_cast<uint32_t>(hash)};
  if (!doc.vector.empty()) vector_docs_.push_back(id);
  if (doc.length > 0) {
    doc_count_++;
    total_length_ += doc.length;
  }
  memory_ += bytes;
  docs_.push_back(std::move(doc));
}

void MemIndex::CatchUp() const {
  {
    std::shared_lock<RwLock> lock(mu_);
    if (indexed_ == docs_.size()) return;
  }
  std::unique_lock<RwLock> lock(mu_);
  for (; indexed_ < docs_.size(); indexed_++) {
    const AnalyzedDoc& d = docs_[indexed_];
    const auto id = static_cast<uint32_t>(indexed_);
    for (const auto& [term, tf] : d.terms) postings_[term].push_back(Posting{id, tf});
    exact_[d.value_hash].push_back(id);
  }
}

size_t MemIndex::MemoryUsage() const {
  std::shared_lock<RwLock> lock(mu_);
  return memory_;
}

uint64_t MemIndex::docs() const {
  std::shared_lock<RwLock> lock(mu_);
  return docs_.size();
}

void MemIndex::ForEachDoc(const std::function<void(const AnalyzedDoc&)>& fn) const {
  std::shared_lock<RwLock> lock(mu_);
  std::vector<uint32_t> order(docs_.size());
  for (uint32_t i = 0; i < order.size(); i++) order[i] = i;
  std::sort(order.begin(), order.end(), [this](uint32_t a, uint32_t b) {
    const AnalyzedDoc& x = docs_[a];
    const AnalyzedDoc& y = docs_[b];
    const int c = x.key.compare(y.key);
    return c != 0 ? c < 0 : x.seq > y.seq;
  });
  for (uint32_t id : order) fn(docs_[id]);
}

bool MemIndex::FindDoc(std::string_view key, uint64_t seq, AnalyzedDoc* doc) const {
  const uint64_t hash = KeyHash(key, seq);
  std::shared_lock<RwLock> lock(mu_);
  const int64_t id = FindLocked(key, seq, hash);
  if (id < 0) return false;
  *doc = docs_[static_cast<size_t>(id)];
  return true;
}

const AnalyzedDoc* MemIndex::FindDocPointer(std::string_view key, uint64_t seq) const {
  const uint64_t hash = KeyHash(key, seq);
  std::shared_lock<RwLock> lock(mu_);
  const int64_t id = FindLocked(key, seq, hash);
  return id < 0 ? nullptr : &docs_[static_cast<size_t>(id)];
}

bool MemIndex::SetVector(std::string_view key, uint64_t seq, const std::vector<float>& vector) {
  if (dimension_ <= 0 || vector.size() != static_cast<size_t>(dimension_)) return false;
  const uint64_t hash = KeyHash(key, seq);
  std::unique_lock<RwLock> lock(mu_);
  const int64_t id = FindLocked(key, seq, hash);
  if (id < 0) return false;
  AnalyzedDoc& d = docs_[static_cast<size_t>(id)];
  if (!d.vector.empty()) return true;
  d.vector = vector;
  RoundToHalfPrecision(&d.vector);
  vector_docs_.push_back(static_cast<uint32_t>(id));
  memory_ += vector.size() * sizeof(float);
  return true;
}

void MemIndex::ExactCandidates(uint64_t value_hash, uint64_t max_seq, std::vector<Candidate>* out) const {
  CatchUp();
  std::shared_lock<RwLock> lock(mu_);
  auto it = exact_.find(value_hash);
  if (it == exact_.end()) return;
  for (uint32_t id : it->second) {
    const AnalyzedDoc& d = docs_[id];
    if (d.seq <= max_seq) out->push_back(Candidate{d.key, d.seq, 0});
  }
}

uint64_t MemIndex::VectorCount() const {
  std::shared_lock<RwLock> lock(mu_);
  return vector_docs_.size();
}

uint64_t MemIndex::DocCount() const {
  std::shared_lock<RwLock> lock(mu_);
  return doc_count_;
}

uint64_t MemIndex::TotalLength() const {
  std::shared_lock<RwLock> lock(mu_);
  return total_length_;
}

uint64_t MemIndex::DocFrequency(std::string_view term) const {
  CatchUp();
  std::shared_lock<RwLock> lock(mu_);
  auto it = postings_.find(std::string(term));
  return it == postings_.end() ? 0 : it->second.size();
}

void MemIndex::ScoreTerms(const std::vector<std::string>& terms, const std::vector<double>& idf, double avgdl,
                          bool match_all, uint64_t max_seq, std::vector<Candidate>* out) const {
  if (terms.empty() || idf.size() != terms.size()) return;
  if (avgdl <= 0) avgdl = 1;
  std::vector<std::pair<uint32_t, double>> hits;  // (doc id, contribution)
  CatchUp();
  {
    std::shared_lock<RwLock> lock(mu_);
    for (size_t i = 0; i < terms.size(); i++) {
      auto it = postings_.find(terms[i]);
      if (it == postings_.end()) {
        if (match_all) return;
        continue;
      }
      for (const Posting& p : it->second) {
        const AnalyzedDoc& d = docs_[p.doc];
        if (d.seq > max_seq) continue;
        const double norm = kBM25K1 * (1 - kBM25B + kBM25B * d.length / avgdl);
        hits.emplace_back(p.doc, idf[i] * p.tf * (kBM25K1 + 1) / (p.tf + norm));
      }
    }
    std::stable_sort(hits.begin(), hits.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (size_t i = 0; i < hits.size();) {
      size_t j = i;
      double score = 0;
      while (j < hits.size() && hits[j].first == hits[i].first) score += hits[j++].second;
      if (!match_all || j - i == terms.size()) {
        const AnalyzedDoc& d = docs_[hits[i].first];
        out->push_back(Candidate{d.key, d.seq, score});
      }
      i = j;
    }
  }
}

void MemIndex::NearestVectors(const float* query, int dimension, size_t n, uint64_t max_seq,
                              std::vector<Candidate>* out) const {
  if (n == 0 || dimension != dimension_ || dimension <= 0) return;
  const size_t dim = static_cast<size_t>(dimension);
  std::shared_lock<RwLock> lock(mu_);
  std::vector<std::pair<float, uint32_t>> best;
  best.reserve(vector_docs_.size());
  for (uint32_t id : vector_docs_) {
    const AnalyzedDoc& d = docs_[id];
    if (d.seq > max_seq) continue;
    best.emplace_back(DotProduct(d.vector.data(), query, dim), id);
  }
  const size_t k = std::min(n, best.size());
  std::partial_sort(best.begin(), best.begin() + static_cast<ptrdiff_t>(k), best.end(),
                    [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  for (size_t i = 0; i < k; i++) {
    const AnalyzedDoc& d = docs_[best[i].second];
    out->push_back(Candidate{d.key, d.seq, best[i].first});
  }
}

}  // namespace kvstore::index
