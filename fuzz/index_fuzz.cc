// libFuzzer target: arbitrary bytes as an index segment (docs/format/index.md).
// Opens it (sections, checksums, doc table, postings, vectors, HNSW graph),
// then runs every kind of query against it with terms, keys and vectors
// taken from the segment itself. The oracle: every call ends in a value or a
// Status, with no crash, sanitizer report or hang.
//   ./kv fuzz index 600
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "index/segment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using kvstore::index::AnalyzedDoc;
  using kvstore::index::Candidate;
  using kvstore::index::Segment;
  std::shared_ptr<Segment> segment;
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (!Segment::OpenContents(std::move(bytes), "fuzz.idx", &segment).ok()) return 0;

  std::vector<AnalyzedDoc> docs;
  segment->ForEachDoc([&](const AnalyzedDoc& d) {
    if (docs.size() < 16) docs.push_back(d);
  });
  std::vector<std::string> terms{"", "a"};
  std::vector<Candidate> out;
  for (const AnalyzedDoc& d : docs) {
    AnalyzedDoc found;
    (void)segment->FindDoc(d.key, d.seq, &found);
    segment->ExactCandidates(d.value_hash, UINT64_MAX, &out);
    for (const auto& [term, tf] : d.terms) {
      if (terms.size() < 8) terms.push_back(term);
    }
  }
  (void)segment->DocCount();
  (void)segment->TotalLength();
  std::vector<double> idf;
  for (const std::string& t : terms) idf.push_back(1.0 + static_cast<double>(segment->DocFrequency(t) % 3));
  segment->ScoreTerms(terms, idf, 10.0, true, UINT64_MAX, &out);
  segment->ScoreTerms(terms, idf, 0.0, false, 5, &out);
  const int dim = segment->dimension();
  if (dim > 0 && dim <= 4096) {
    std::vector<float> query(static_cast<size_t>(dim), 0.0f);
    query[0] = 1.0f;
    segment->NearestVectors(query.data(), dim, 10, UINT64_MAX, &out);
    for (const AnalyzedDoc& d : docs) {
      if (d.vector.size() == static_cast<size_t>(dim)) segment->NearestVectors(d.vector.data(), dim, 3, UINT64_MAX, &out);
    }
  }
  (void)segment->MemoryUsage();
  return 0;
}
