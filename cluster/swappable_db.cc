#include "cluster/swappable_db.h"

namespace kvstore::cluster {

namespace {

// A snapshot of one particular store, which it keeps open.
class PinnedSnapshot final : public Snapshot {
 public:
  PinnedSnapshot(std::shared_ptr<DB> db, const Snapshot* inner)
      : Snapshot(inner->sequence()), db(std::move(db)), inner(inner) {}
  std::shared_ptr<DB> db;
  const Snapshot* inner;
};

class PinnedIterator final : public Iterator {
 public:
  PinnedIterator(std::shared_ptr<DB> db, std::unique_ptr<Iterator> inner)
      : db_(std::move(db)), inner_(std::move(inner)) {}
  bool Valid() const override { return inner_->Valid(); }
  void SeekToFirst() override { inner_->SeekToFirst(); }
  void Seek(std::string_view target) override { inner_->Seek(target); }
  void Next() override { inner_->Next(); }
  std::string_view key() const override { return inner_->key(); }
  std::string_view value() const override { return inner_->value(); }
  Status status() const override { return inner_->status(); }

 private:
  std::shared_ptr<DB> db_;            // declared first: destroyed after inner_
  std::unique_ptr<Iterator> inner_;
};

// The store a read goes to, and the options to give it.
std::shared_ptr<DB> Target(const SwappableDB& self, const ReadOptions& o, ReadOptions* inner) {
  *inner = o;
  if (o.snapshot == nullptr) return self.current();
  const auto* pinned = static_cast<const PinnedSnapshot*>(o.snapshot);
  inner->snapshot = pinned->inner;
  return pinned->db;
}

// The same for a search's options, which carry a snapshot too.
template <typename Options>
std::shared_ptr<DB> SearchTarget(const SwappableDB& self, const Options& o, Options* inner) {
  *inner = o;
  if (o.snapshot == nullptr) return self.current();
  const auto* pinned = static_cast<const PinnedSnapshot*>(o.snapshot);
  inner->snapshot = pinned->inner;
  return pinned->db;
}

}  // namespace

Status SwappableDB::SearchByValue(std::string_view value, const ValueSearchOptions& o,
                                  std::vector<SearchHit>* hits) {
  ValueSearchOptions inner;
  return SearchTarget(*this, o, &inner)->SearchByValue(value, inner, hits);
}

Status SwappableDB::FullTextSearch(std::string_view query, const FullTextOptions& o, std::vector<SearchHit>* hits) {
  FullTextOptions inner;
  return SearchTarget(*this, o, &inner)->FullTextSearch(query, inner, hits);
}

Status SwappableDB::SemanticSearch(std::string_view text, const SemanticOptions& o, std::vector<SearchHit>* hits) {
  SemanticOptions inner;
  return SearchTarget(*this, o, &inner)->SemanticSearch(text, inner, hits);
}

Status SwappableDB::SemanticSearchByVector(const std::vector<float>& vector, const SemanticOptions& o,
                                           std::vector<SearchHit>* hits) {
  SemanticOptions inner;
  return SearchTarget(*this, o, &inner)->SemanticSearchByVector(vector, inner, hits);
}

Status SwappableDB::Get(const ReadOptions& o, std::string_view key, std::string* value) {
  ReadOptions inner;
  std::shared_ptr<DB> db = Target(*this, o, &inner);
  return db->Get(inner, key, value);
}

std::unique_ptr<Iterator> SwappableDB::NewIterator(const ReadOptions& o) {
  ReadOptions inner;
  std::shared_ptr<DB> db = Target(*this, o, &inner);
  std::unique_ptr<Iterator> it = db->NewIterator(inner);
  return std::make_unique<PinnedIterator>(std::move(db), std::move(it));
}

const Snapshot* SwappableDB::GetSnapshot() {
  std::shared_ptr<DB> db = current();
  const Snapshot* inner = db->GetSnapshot();
  return new PinnedSnapshot(std::move(db), inner);
}

void SwappableDB::ReleaseSnapshot(const Snapshot* snapshot) {
  const auto* pinned = static_cast<const PinnedSnapshot*>(snapshot);
  pinned->db->ReleaseSnapshot(pinned->inner);
  delete pinned;
}

}  // namespace kvstore::cluster
