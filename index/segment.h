// Index segments: the search indexes of one table, in a sidecar file
// NNNNNN.idx beside NNNNNN.sst (docs/format/index.md), and the pieces shared
// with the memtable's index: the index configuration, analysed documents and
// the query-side IndexSource interface.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "index/analyzer.h"
#include "kvstore/embedder.h"
#include "kvstore/env.h"
#include "kvstore/status.h"

namespace kvstore::index {

// What went into a segment; stored in it as a fingerprint: a segment whose
// fingerprint differs from the store's current configuration is rebuilt.
struct IndexConfig {
  AnalyzerOptions analyzer;
  std::vector<std::string> prefixes;  // empty: every key; else only keys starting with one of them
  std::string embedder_name;          // "" / 0: no semantic index
  int dimension = 0;
  // "idx1-" and 16 hex digits: a hash of all the above (prefixes as a set).
  std::string Fingerprint() const;
  // Writer policy, not part of the fingerprint (a reader takes a segment
  // with or without a graph): a segment gets an HNSW graph from this many
  // vectors; 0 = HnswMinVectors(dimension).
  size_t hnsw_min_vectors = 0;
};

// What one Put contributes to the indexes.
struct AnalyzedDoc {
  std::string key;
  uint64_t seq = 0;
  uint64_t value_hash = 0;
  std::vector<std::pair<std::string, uint32_t>> terms;  // distinct term -> term frequency, term ascending
  // Empty, or the low 32 bits of TokenHash (analyzer.h) of each term, parallel to
  // terms: the analysis hashes every term to count it, and a segment writer
  // probes its term dictionary with the same hash instead of hashing every
  // occurrence again. 32 bits: a memtable holds these, and its budget pays
  // for them; the writer compares the terms themselves on a match.
  std::vector<uint32_t> term_hashes;
  uint32_t length = 0;                                  // token count (BM25 document length)
  std::vector<float> vector;                            // empty: no semantic index, or no text features
};

// Fills *doc from (key, seq, value). embedder may be null (no semantic
// index). Fails only when the embedder fails or returns a vector of the
// wrong dimension.
Status AnalyzeDoc(const Analyzer& analyzer, Embedder* embedder, std::string_view key, uint64_t seq,
                  std::string_view value, AnalyzedDoc* doc);

bool KeyIndexed(const IndexConfig& config, std::string_view key);

// The dot product of two float vectors of dim elements, vectorised (the
// brute-force scans of segments and memtables).
float DotProduct(const float* a, const float* b, size_t dim);

// Vectors are kept as IEEE binary16 (docs/format/index.md, version 2): half
// the bytes of a segment's largest section to write, and of its memory.
// Conversions round to nearest, ties to even; F16C when compiled for it.
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
void FloatsToHalves(const float* in, size_t n, uint16_t* out);
void HalvesToFloats(const uint16_t* in, size_t n, float* out);
// Rounds each element to the nearest binary16 value, so that the memtable's
// index scores a doc exactly as its segment will once it is flushed.
void RoundToHalfPrecision(std::vector<float>* v);
// The dot product of a binary16 vector with a float one.
float DotProductHalf(const uint16_t* a, const float* b, size_t dim);

struct Candidate {
  std::string key;
  uint64_t seq = 0;
  double score = 0;
};

// BM25 parameters.
inline constexpr double kBM25K1 = 1.2;
inline constexpr double kBM25B = 0.75;
// Below this many vector elements (vectors x dimension) a segment has no
// HNSW graph and is searched by a scan of int8 codes with exact rescoring:
// 2^27 int8 elements is a 128 MiB scan, ~10 ms for a dense query, and much
// less for the hashing embedder's sparse ones (the scan skips zero query
// components). Above it a graph pays for its build cost (~250 us a vector
// at M = 16, ef_construction = 100). On the hashing embedder's nearly
// orthogonal vectors HNSW needs a very wide search for good recall, which
// the scan does not.
inline constexpr size_t kHnswMinElements = size_t{1} << 27;
inline constexpr size_t kHnswMinVectorsFloor = 1000;
inline size_t HnswMinVectors(int dimension) {
  const size_t dim = dimension > 0 ? static_cast<size_t>(dimension) : 1;
  return std::max(kHnswMinVectorsFloor, kHnswMinElements / dim);
}

// The query side, implemented by an on-disk Segment and the in-memory
// MemIndex. Const methods are thread-safe. max_seq: docs with seq > max_seq
// (newer than the reader's snapshot) are ignored.
class IndexSource {
 public:
  virtual ~IndexSource() = default;
  virtual void ExactCandidates(uint64_t value_hash, uint64_t max_seq, std::vector<Candidate>* out) const = 0;
  virtual uint64_t DocCount() const = 0;     // docs with at least one token
  virtual uint64_t TotalLength() const = 0;  // sum of their lengths
  virtual uint64_t DocFrequency(std::string_view term) const = 0;
  // Appends every doc matching all terms (match_all) or any, scored
  // sum_i idf[i] * tf*(k1+1) / (tf + k1*(1 - b + b*len/avgdl)).
  // terms should be distinct.
  virtual void ScoreTerms(const std::vector<std::string>& terms, const std::vector<double>& idf, double avgdl,
                          bool match_all, uint64_t max_seq, std::vector<Candidate>* out) const = 0;
  // Appends up to n docs nearest to the L2-normalised query by cosine
  // (score = cosine), best first. Nothing when dimension differs.
  virtual void NearestVectors(const float* query, int dimension, size_t n, uint64_t max_seq,
                              std::vector<Candidate>* out) const = 0;
  // How many vectors NearestVectors looks through (the cost of a scan): a
  // query spreads big sources over threads.
  virtual uint64_t VectorCount() const = 0;
};

class SegmentWriter {
 public:
  explicit SegmentWriter(const IndexConfig& config);
  ~SegmentWriter();
  // Docs come in table order (key ascending, seq descending); Finish sorts
  // them anyway. Docs whose vector has the wrong dimension keep no vector.
  void Add(AnalyzedDoc doc);
  // The same without a copy: *doc must stay as it is until Finish returns
  // (a flush borrows the docs of the memtable's index, which outlives it;
  // copying them was a tenth of a flush's cost).
  void AddBorrowed(const AnalyzedDoc* doc);
  // Writes the whole segment; the caller syncs and closes the file.
  Status Finish(WritableFile* file);
  // The segment's bytes, for tests and for callers that write elsewhere.
  Status Finish(std::string* contents);
  size_t docs() const { return docs_.size(); }

 private:
  bool HasVector(const AnalyzedDoc& doc) const;

  IndexConfig config_;
  std::string fingerprint_;
  std::deque<AnalyzedDoc> owned_;         // the docs given by Add; a deque: growing never moves one
  std::vector<const AnalyzedDoc*> docs_;  // every doc, owned or borrowed
};

class Segment final : public IndexSource {
 public:
  ~Segment() override;
  // Reads the whole file and verifies magic, version, section checksums and
  // every offset, count and id in it: Corruption naming `name` on any damage.
  static Status Open(std::unique_ptr<RandomAccessFile> file, uint64_t file_size, const std::string& name,
                     std::shared_ptr<Segment>* out);
  // The same, from bytes in memory.
  static Status OpenContents(std::string contents, const std::string& name, std::shared_ptr<Segment>* out);

  const std::string& fingerprint() const { return fingerprint_; }
  uint64_t docs() const { return docs_.size(); }
  int dimension() const { return dimension_; }
  bool has_hnsw() const;
  // The analysed doc for (key, seq), to carry it through a compaction
  // without analysing the value again; false when absent.
  bool FindDoc(std::string_view key, uint64_t seq, AnalyzedDoc* doc) const;
  // The same for lookups in table order (a compaction's, whose entries come
  // key ascending, seq descending): *cursor, 0 at first, remembers where
  // the last one ended, and the search gallops forward from there instead
  // of bisecting all docs for each. Any order still finds every doc (one
  // behind the cursor costs a full search).
  bool FindDocFrom(std::string_view key, uint64_t seq, size_t* cursor, AnalyzedDoc* doc) const;
  // Every doc in table order (key ascending, seq descending).
  void ForEachDoc(const std::function<void(const AnalyzedDoc&)>& fn) const;
  size_t MemoryUsage() const;

  void ExactCandidates(uint64_t value_hash, uint64_t max_seq, std::vector<Candidate>* out) const override;
  uint64_t DocCount() const override { return doc_count_; }
  uint64_t TotalLength() const override { return total_length_; }
  uint64_t DocFrequency(std::string_view term) const override;
  void ScoreTerms(const std::vector<std::string>& terms, const std::vector<double>& idf, double avgdl,
                  bool match_all, uint64_t max_seq, std::vector<Candidate>* out) const override;
  void NearestVectors(const float* query, int dimension, size_t n, uint64_t max_seq,
                      std::vector<Candidate>* out) const override;
  uint64_t VectorCount() const override { return vector_docs_.size(); }

  struct Hnsw;  // the hnswlib graph, private to segment.cc

 private:
  Segment() = default;
  Status Parse(const std::string& name);
  // Vector vector_id as dimension_ floats.
  void CopyVector(uint32_t vector_id, float* out) const;
  void ReleaseCopiedSections(ptrdiff_t keep);
  // docs_[i] as an AnalyzedDoc (FindDoc's answer).
  void CopyDoc(size_t i, AnalyzedDoc* doc) const;

  struct Doc {
    std::string_view key;
    uint64_t seq;
    uint64_t value_hash;
    uint32_t length;
    uint32_t forward_offset;  // into forward_: this doc's (term id, tf) list
    int32_t vector_id;        // -1: none
  };
  struct Term {
    std::string_view term;
    uint32_t df;
    // TokenHash's low 32 bits, for FindDoc's term_hashes: hashed once per
    // segment here, not once per occurrence by every compaction's writer.
    uint32_t hash;
    std::string_view postings;  // validated (doc id delta, tf) varint pairs
  };

  std::string contents_;
  std::string fingerprint_;
  std::vector<Doc> docs_;
  std::vector<Term> terms_;  // term ascending
  std::string_view forward_;
  std::vector<std::pair<uint64_t, uint32_t>> exact_;  // (value hash, doc id), sorted
  uint64_t doc_count_ = 0;
  uint64_t total_length_ = 0;
  uint64_t max_seq_ = 0;
  int dimension_ = 0;
  std::vector<uint32_t> vector_docs_;  // vector id -> doc id
  std::vector<uint64_t> vector_seqs_;  // sorted seqs of the docs with vectors
  // Without a graph: vector_docs_.size() * dimension_ binary16 values, in
  // contents_ (version 2, aligned) or in vector_storage_ (converted from a
  // version 1 segment's floats, or copied when unaligned). With a graph the
  // floats live in hnswlib's memory.
  const uint16_t* vectors_ = nullptr;
  std::unique_ptr<uint16_t[]> vector_storage_;
  std::unique_ptr<Hnsw> hnsw_;
  // Without a graph: the vectors as int8 codes, dimension-major (one row
  // per dimension: the codes of every vector, padded to a multiple of
  // kScanBlock, so that a query streams through only the rows of its
  // non-zero components), and a scale per vector (code * scale is within
  // scale / 2 of the float).
  std::unique_ptr<int8_t[]> codes_;
  std::vector<float> scales_;
  void BuildScanCodes();
  void ScanNearest(const float* query, size_t n, uint64_t max_seq,
                   std::vector<std::pair<float, uint32_t>>* best) const;
};

}  // namespace kvstore::index
