#include "index/hnsw_build.h"

// hnswlib defines (not just declares) globals in its headers, so it can be
// included in one translation unit only; segment.cc is that unit. Here it
// goes into a namespace of this file's own, which gives those globals
// internal linkage. Every header hnswlib includes comes first, so that none
// of them ends up inside that namespace.
#include <assert.h>
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <deque>
#include <exception>
#include <fstream>
#include <iostream>
#include <list>
#include <mutex>
#include <queue>
#include <random>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {
#include <hnswlib/hnswlib.h>
}  // namespace

#include "engine/coding/coding.h"

namespace kvstore::index {

Status BuildHnswGraph(const std::vector<const float*>& vectors, size_t dim, size_t m, size_t ef_construction,
                      std::string* graph) {
  try {
    hnswlib::InnerProductSpace space(dim);
    hnswlib::HierarchicalNSW<float> hnsw(&space, vectors.size(), m, ef_construction, 42);
    for (size_t v = 0; v < vectors.size(); v++) hnsw.addPoint(vectors[v], v);
    PutVarint32(graph, static_cast<uint32_t>(m));
    PutVarint32(graph, static_cast<uint32_t>(ef_construction));
    PutVarint32(graph, static_cast<uint32_t>(hnsw.maxlevel_));
    PutVarint32(graph, static_cast<uint32_t>(hnsw.enterpoint_node_));
    for (size_t v = 0; v < vectors.size(); v++) {
      const auto node = static_cast<hnswlib::tableint>(v);
      const int level = hnsw.element_levels_[v];
      PutVarint32(graph, static_cast<uint32_t>(level));
      for (int l = 0; l <= level; l++) {
        hnswlib::linklistsizeint* ll = hnsw.get_linklist_at_level(node, l);
        const size_t count = hnsw.getListCount(ll);
        const auto* ids = reinterpret_cast<const hnswlib::tableint*>(ll + 1);
        PutVarint32(graph, static_cast<uint32_t>(count));
        for (size_t j = 0; j < count; j++) PutVarint32(graph, ids[j]);
      }
    }
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("building the HNSW graph: ") + e.what());
  }
  return Status::OK();
}

}  // namespace kvstore::index
