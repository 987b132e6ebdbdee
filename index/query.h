// The query coordinator: runs a search over many index sources (the
// memtables' indexes and every live segment), checks each candidate against
// the newest visible version of its key, and merges the results.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "index/analyzer.h"
#include "index/segment.h"
#include "kvstore/status.h"

namespace kvstore::index {

// Liveness: *live = true when (key, seq) is the newest version of key
// visible to the query's snapshot; fills *value (the current value) when
// value != nullptr and the version is live. A non-OK status ends the query.
using LiveCheck = std::function<Status(std::string_view key, uint64_t seq, bool* live, std::string* value)>;

struct Hit {
  std::string key;
  double score = 0;
  std::string value;
  bool has_value = false;
};

// In every search, limit / k == 0 means no hits (not "unlimited").

// Keys whose current value is exactly `value`: candidates by value hash from
// every source, one per key (its newest), verified by comparing the bytes of
// the live value. Hits in key order, score 0.
Status ExactSearch(const std::vector<const IndexSource*>& sources, std::string_view value, uint64_t max_seq,
                   size_t limit, bool want_values, const LiveCheck& live, std::vector<Hit>* hits);

// BM25 over all sources together: idf = ln(1 + (N - df + 0.5)/(df + 0.5))
// with N and df summed over the sources, avgdl = total length / N. Best
// first (ties by key); a query without tokens has no hits.
Status FullTextSearch(const std::vector<const IndexSource*>& sources, const Analyzer& analyzer,
                      std::string_view query, bool match_all, uint64_t max_seq, size_t limit, bool want_values,
                      const LiveCheck& live, std::vector<Hit>* hits);

// Below this many vectors in all sources together a semantic query scans
// its sources on its own thread: the scans take well under a millisecond,
// not worth starting threads for.
inline constexpr uint64_t kParallelScanVectors = 1 << 16;

// The k live docs nearest to the L2-normalised query with cosine >=
// threshold, best first. Asks each source for n = k nearest, doubling n
// while fewer than k are live and some source may have more. From
// parallel_min_vectors vectors on, and while the machine has an idle core
// (1-minute load average below cores - 0.5), the sources are scanned by up
// to one thread per core (at most 4); 0 spreads them always. The result is
// the same either way.
Status SemanticSearch(const std::vector<const IndexSource*>& sources, const std::vector<float>& query, size_t k,
                      double threshold, uint64_t max_seq, bool want_values, const LiveCheck& live,
                      std::vector<Hit>* hits, uint64_t parallel_min_vectors = kParallelScanVectors);

}  // namespace kvstore::index
