// NewClientVectorsEmbedder: the "embedder" of a semantic index whose vectors
// all come with the writes and the queries.
#include <memory>
#include <string>

#include "kvstore/embedder.h"

namespace kvstore {

namespace {

class ClientVectorsEmbedder final : public Embedder {
 public:
  explicit ClientVectorsEmbedder(int dimension) : dimension_(dimension) {}
  int dimension() const override { return dimension_; }
  std::string name() const override { return "client:" + std::to_string(dimension_); }
  Status Embed(const std::vector<std::string_view>&, std::vector<std::vector<float>>*) override {
    return Status::NotSupported("this store's vectors come from its clients (embedder " + name() +
                                "): search by vector, or put values with their vectors");
  }

 private:
  const int dimension_;
};

}  // namespace

std::shared_ptr<Embedder> NewClientVectorsEmbedder(int dimension) {
  return std::make_shared<ClientVectorsEmbedder>(dimension);
}

}  // namespace kvstore
