#include "engine/memtable/memtable.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "engine/coding/checksum.h"

namespace kvstore {

namespace {
// Entries were encoded by Add, so their varints need no bounds checks.
inline std::string_view LengthPrefixedAt(const char* p) {
  uint32_t len = static_cast<unsigned char>(*p);
  if (len < 0x80) [[likely]] return {p + 1, len};
  len &= 0x7f;
  for (uint32_t shift = 7;; shift += 7) {
    uint32_t byte = static_cast<unsigned char>(*++p);
    len |= (byte & 0x7f) << shift;
    if (byte < 0x80) return {p + 1, len};
  }
}
constexpr size_t kLinkSize = 8;
// The internal key of the entry at p (its chain link first).
inline std::string_view GetInternalKey(const char* p) { return LengthPrefixedAt(p + kLinkSize); }
inline std::string_view GetValueAfter(std::string_view internal_key) {
  return LengthPrefixedAt(internal_key.data() + internal_key.size());
}
}  // namespace

int MemTable::KeyComparator::operator()(const char* a, const char* b) const {
  return CompareInternalKeys(GetInternalKey(a), GetInternalKey(b));
}

MemTable::MemTable(uint64_t wal_number, size_t budget)
    : wal_number_(wal_number),
      arena_(budget >= 16 * Arena::kHugePageSize ? Arena::kHugePageSize
                                                  : std::clamp<size_t>(budget / 8, 4096, Arena::kDefaultBlockSize)),
      table_(KeyComparator{}, &arena_) {
  static_assert(sizeof(Link) == kLinkSize);
  // About one bucket per 256 bytes of budget: a bucket per one or two
  // entries of 100-byte values, 3% of the budget in buckets.
  const size_t buckets = std::bit_ceil(std::max<size_t>(64, budget / 256));
  char* mem = arena_.AllocateAligned(buckets * sizeof(Link));
  buckets_ = reinterpret_cast<Link*>(mem);
  for (size_t i = 0; i < buckets; i++) new (mem + i * sizeof(Link)) Link(nullptr);
  bucket_mask_ = buckets - 1;
}

MemTable::Link& MemTable::BucketOf(std::string_view user_key) const {
  return buckets_[Checksum64(user_key) & bucket_mask_];
}

void MemTable::Chain(Link* bucket, const char* entry, const char* replaced) {
  if (replaced != nullptr) {
    // A reader standing on `replaced` still walks on from it to the rest of
    // the chain: its link is never changed.
    for (Link* slot = bucket; const char* at = slot->load(std::memory_order_relaxed); slot = LinkOf(at)) {
      if (at == replaced) {
        LinkOf(entry)->store(LinkOf(replaced)->load(std::memory_order_relaxed), std::memory_order_relaxed);
        slot->store(entry, std::memory_order_release);
        return;
      }
    }
  }
  LinkOf(entry)->store(bucket->load(std::memory_order_relaxed), std::memory_order_relaxed);
  bucket->store(entry, std::memory_order_release);
}

void MemTable::Add(SequenceNumber seq, ValueType type, std::string_view key,
                   std::string_view value) {
  const size_t internal_size = key.size() + 8;
  const size_t value_size = type == ValueType::kValue ? value.size() : 0;
  const size_t encoded = VarintLength(internal_size) + internal_size + VarintLength(value_size) +
                         value_size;
  // The bucket is a cache miss of its own: fetch it while the skiplist
  // insert waits on its own misses.
  Link* bucket = &BucketOf(key);
  __builtin_prefetch(bucket, 1);
  char* buf = table_.AllocateEntry(kLinkSize + encoded);
  new (buf) Link(nullptr);
  char* p = EncodeVarint32(buf + kLinkSize, static_cast<uint32_t>(internal_size));
  std::memcpy(p, key.data(), key.size());
  p += key.size();
  EncodeFixed64(p, PackTag(seq, type));
  p += 8;
  p = EncodeVarint32(p, static_cast<uint32_t>(value_size));
  if (value_size > 0) std::memcpy(p, value.data(), value_size);

  // A key after the largest one so far goes last without a search: inserts
  // in key order (fillseq, bulk loads) then skip the skiplist's comparisons.
  const std::string_view internal_key(buf + kLinkSize + VarintLength(internal_size), internal_size);
  const char* next = nullptr;
  if (!largest_.empty() && CompareInternalKeys(internal_key, largest_) > 0) {
    table_.InsertLast(buf);
  } else {
    // The entry that follows the new one is this key's previous newest
    // version when the key was already here, which keeps live_keys exact
    // for free.
    next = table_.Insert(buf);
  }
  if (next == nullptr) largest_.assign(internal_key);
  bool had_value = false;
  const char* replaced = nullptr;
  if (next != nullptr) {
    std::string_view next_key = GetInternalKey(next);
    if (ExtractUserKey(next_key) == key) {
      had_value = TagType(ExtractTag(next_key)) == ValueType::kValue;
      replaced = next;
    }
  }
  Chain(bucket, buf, replaced);
  bool has_value = type == ValueType::kValue;
  if (has_value != had_value) live_keys_.fetch_add(has_value ? 1 : -1, std::memory_order_relaxed);
  entries_.fetch_add(1, std::memory_order_relaxed);
}

MemTable::Lookup MemTable::Get(std::string_view key, SequenceNumber seq, std::string* value,
                               SequenceNumber* found_seq) const {
  // Reads served by the tables probe every memtable first: an empty one
  // (just after a flush or an open) answers without a miss on its buckets.
  // An entry visible at seq was counted before seq was published.
  if (entries_.load(std::memory_order_relaxed) == 0) return Lookup::kAbsent;
  const char* entry = nullptr;
  for (const char* at = BucketOf(key).load(std::memory_order_acquire); at != nullptr;
       at = LinkOf(at)->load(std::memory_order_acquire)) {
    if (ExtractUserKey(GetInternalKey(at)) != key) continue;
    // The key's newest entry. Newer than the reader's snapshot: an older
    // version may still be visible, which only the skiplist holds.
    entry = TagSequence(ExtractTag(GetInternalKey(at))) <= seq ? at : FindInSkipList(key, seq);
    break;
  }
  if (entry == nullptr) return Lookup::kAbsent;
  std::string_view found = GetInternalKey(entry);
  if (found_seq != nullptr) *found_seq = TagSequence(ExtractTag(found));
  if (TagType(ExtractTag(found)) == ValueType::kDeletion) return Lookup::kDeleted;
  std::string_view v = GetValueAfter(found);
  value->assign(v.data(), v.size());
  return Lookup::kFound;
}

const char* MemTable::FindInSkipList(std::string_view key, SequenceNumber seq) const {
  // Encode the lookup key (after room for a chain link) on the stack when
  // it is small.
  char stack[256];
  std::string heap;
  const size_t internal_size = key.size() + 8;
  const size_t needed = kLinkSize + VarintLength(internal_size) + internal_size;
  char* buf = stack;
  if (needed > sizeof(stack)) {
    heap.resize(needed);
    buf = heap.data();
  }
  char* p = EncodeVarint32(buf + kLinkSize, static_cast<uint32_t>(internal_size));
  std::memcpy(p, key.data(), key.size());
  EncodeFixed64(p + key.size(), PackTag(seq, kValueTypeForSeek));

  Table::Iterator it(&table_);
  it.Seek(buf);
  if (!it.Valid() || ExtractUserKey(GetInternalKey(it.key())) != key) return nullptr;
  return it.key();
}

class MemTable::Iter final : public InternalIterator {
 public:
  explicit Iter(const Table* table) : it_(table) {}
  bool Valid() const override { return it_.Valid(); }
  void SeekToFirst() override { it_.SeekToFirst(); }
  void Seek(std::string_view target) override {
    scratch_.assign(kLinkSize, '\0');  // the entries' chain link, which comparisons skip
    PutLengthPrefixed(&scratch_, target);
    it_.Seek(scratch_.data());
  }
  void Next() override { it_.Next(); }
  std::string_view key() const override { return GetInternalKey(it_.key()); }
  std::string_view value() const override { return GetValueAfter(key()); }

 private:
  Table::Iterator it_;
  std::string scratch_;
};

std::unique_ptr<InternalIterator> MemTable::NewIterator() const {
  return std::make_unique<Iter>(&table_);
}

}  // namespace kvstore
