// Embedders for semantic search. The interface is public (kvstore::Embedder
// in include/kvstore/embedder.h) so that applications can supply their own.
#pragma once

#include "kvstore/embedder.h"

namespace kvstore::index {

using kvstore::Embedder;
using kvstore::NewHashingEmbedder;

// The name the hashing embedder records in segments; bump the version when
// its features or weights change, so that old segments are rebuilt.
// v2: the same features, summed in another order (last-bit differences).
inline constexpr const char* kHashingEmbedderName = "kvstore-hashing-v2";

}  // namespace kvstore::index
