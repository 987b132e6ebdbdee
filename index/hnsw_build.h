// Building a segment's HNSW graph, in a file of its own: hnswlib's addPoint
// reads one element past a link list (a prefetch of the next neighbour), so
// sanitizer builds compile this file without AddressSanitizer while
// everything that parses segment bytes stays instrumented.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "kvstore/status.h"

namespace kvstore::index {

// Builds a graph (inner product over L2-normalised vectors of dimension dim,
// m links per node, construction beam ef_construction) over vectors, in
// order, and appends it to *graph in the segment's graph-section encoding
// (docs/format/index.md).
Status BuildHnswGraph(const std::vector<const float*>& vectors, size_t dim, size_t m, size_t ef_construction,
                      std::string* graph);

}  // namespace kvstore::index
