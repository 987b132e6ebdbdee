// The memtable's index: the same IndexSource interface as a segment, built
// one Put at a time.
//
// Add, on the write path, only stores the analysed doc (and finds it by
// (key, seq) through a flat hash table). The inverted indexes (postings and
// exact-value hashes) are built by the first query that needs them, over
// the docs added since the last one: a flush never needs them (it reads the
// docs), so a memtable that nobody searches never pays for them, and a
// query pays only for what was written since the previous query. Every doc
// a query's snapshot covers was added before that snapshot was published,
// so the query's own catch-up covers them.
//
// Thread safety: writers (Add, called by the DB's write leader; SetVector,
// by the background embedder) and any number of concurrent readers; readers
// never see a half-added doc.
#pragma once

#include <pthread.h>

#include <deque>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "index/segment.h"

namespace kvstore::index {

class MemIndex final : public IndexSource {
 public:
  explicit MemIndex(const IndexConfig& config);

  // Puts only. A (key, seq) added twice keeps the first. Docs whose vector
  // has the wrong dimension keep no vector.
  void Add(AnalyzedDoc doc);
  size_t MemoryUsage() const;
  uint64_t docs() const;
  // All docs in (key ascending, seq descending) order, for a flush to write
  // the segment without analysing again. Holds the read lock throughout.
  void ForEachDoc(const std::function<void(const AnalyzedDoc&)>& fn) const;
  bool FindDoc(std::string_view key, uint64_t seq, AnalyzedDoc* doc) const;
  // The doc itself, not a copy; null when absent. It stays where it is for
  // the life of this index, but SetVector may change it: only for callers
  // that know nobody calls SetVector (a synchronous embedder).
  const AnalyzedDoc* FindDocPointer(std::string_view key, uint64_t seq) const;
  // Gives the doc (key, seq) its vector, computed after it was added (an
  // embedder that is not synchronous). True when the doc is here and has a
  // vector now (set by this call or before); false when it is absent or the
  // vector has the wrong dimension.
  bool SetVector(std::string_view key, uint64_t seq, const std::vector<float>& vector);

  void ExactCandidates(uint64_t value_hash, uint64_t max_seq, std::vector<Candidate>* out) const override;
  uint64_t DocCount() const override;
  uint64_t TotalLength() const override;
  uint64_t DocFrequency(std::string_view term) const override;
  void ScoreTerms(const std::vector<std::string>& terms, const std::vector<double>& idf, double avgdl,
                  bool match_all, uint64_t max_seq, std::vector<Candidate>* out) const override;
  // Brute force over every vector.
  void NearestVectors(const float* query, int dimension, size_t n, uint64_t max_seq,
                      std::vector<Candidate>* out) const override;
  uint64_t VectorCount() const override;

 private:
  // A writer-preferring reader/writer lock: glibc's default (and so
  // std::shared_mutex) prefers readers, and a steady stream of searches
  // would starve the write leader. Not recursive: no method locks twice.
  class RwLock {
   public:
    RwLock();
    ~RwLock();
    void lock() { pthread_rwlock_wrlock(&rw_); }
    void unlock() { pthread_rwlock_unlock(&rw_); }
    void lock_shared() { pthread_rwlock_rdlock(&rw_); }
    void unlock_shared() { pthread_rwlock_unlock(&rw_); }

   private:
    pthread_rwlock_t rw_;
  };

  struct Posting {
    uint32_t doc;
    uint32_t tf;
  };

  static uint64_t KeyHash(std::string_view key, uint64_t seq);
  // The doc id of (key, seq), or -1. mu_ held (either way).
  int64_t FindLocked(std::string_view key, uint64_t seq, uint64_t hash) const;
  // Files docs [indexed_, docs_.size()) into postings_ and exact_. Every
  // query method calls it first; takes mu_ exclusively when there is work.
  void CatchUp() const;

  const int dimension_;
  mutable RwLock mu_;
  std::deque<AnalyzedDoc> docs_;  // by doc id (arrival order); a deque: growing never moves a doc
  // (key, seq) -> doc id + 1 (0: empty), open addressing by KeyHash, at
  // most half full. Each slot keeps its doc's hash (the low 32 bits, which
  // also place it), so that a probe reads a doc only when the hash matches:
  // reading each probed doc's key was a cache miss on every Add.
  struct Slot {
    uint32_t id_plus_1;
    uint32_t hash;
  };
  std::vector<Slot> slots_;
  std::vector<uint32_t> vector_docs_;
  uint64_t doc_count_ = 0;
  uint64_t total_length_ = 0;
  size_t memory_ = 0;
  // Built lazily by CatchUp (mutable: queries are const).
  mutable size_t indexed_ = 0;  // docs filed into postings_ and exact_
  mutable std::unordered_map<std::string, std::vector<Posting>> postings_;
  mutable std::unordered_map<uint64_t, std::vector<uint32_t>> exact_;
};

}  // namespace kvstore::index
