#include "index/segment.h"

#include "index/hnsw_build.h"

#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <unordered_map>

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "engine/coding/checksum.h"
#include "engine/coding/coding.h"
#include "index/embedder.h"

namespace kvstore::index {

// ---------------------------------------------------------------------------
// Configuration and analysis

std::string IndexConfig::Fingerprint() const {
  std::vector<std::string> sorted = prefixes;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::string canon;
  PutLengthPrefixed(&canon, analyzer.stemmer_language);
  canon.push_back(analyzer.stop_words ? '1' : '0');
  canon.push_back(analyzer.strip_diacritics ? '1' : '0');
  PutVarint32(&canon, static_cast<uint32_t>(sorted.size()));
  for (const std::string& p : sorted) PutLengthPrefixed(&canon, p);
  PutLengthPrefixed(&canon, embedder_name);
  PutVarint32(&canon, static_cast<uint32_t>(dimension));
  char buf[32];
  std::snprintf(buf, sizeof(buf), "idx1-%016llx", static_cast<unsigned long long>(Checksum64(canon)));
  return buf;
}

bool KeyIndexed(const IndexConfig& config, std::string_view key) {
  if (config.prefixes.empty()) return true;
  for (const std::string& p : config.prefixes) {
    if (key.starts_with(p)) return true;
  }
  return false;
}

namespace {

// A document's distinct terms and their counts: an open-addressing table
// keyed by the term's TokenHash, then the distinct terms sorted by an 8-byte
// big-endian prefix (one integer compare settles most pairs) and bytewise
// on ties. Terms hold no NUL bytes, so zero padding keeps the prefix order
// the bytewise order.
class TermCounter {
 public:
  static TermCounter& ForThread() {
    static thread_local TermCounter counter;
    return counter;
  }

  // h: TokenHash(t).
  void Add(std::string_view t, uint64_t h) {
    if (2 * (entries_.size() + 1) > slots_.size()) Grow();
    const size_t mask = slots_.size() - 1;
    for (size_t i = static_cast<size_t>(h) & mask;; i = (i + 1) & mask) {
      const uint32_t slot = slots_[i];
      if (slot == 0) {
        uint64_t prefix = 0;
        for (size_t b = 0; b < 8 && b < t.size(); b++) prefix |= uint64_t{static_cast<unsigned char>(t[b])} << (56 - 8 * b);
        entries_.push_back(Entry{h, prefix, static_cast<uint32_t>(bytes_.size()), static_cast<uint32_t>(t.size()), 1});
        bytes_.append(t);
        slots_[i] = static_cast<uint32_t>(entries_.size());
        return;
      }
      Entry& e = entries_[slot - 1];
      if (e.hash == h && View(e) == t) {
        if (e.count < UINT32_MAX) e.count++;
        return;
      }
    }
  }

  // Appends (term, count) and the term's hash in term order and resets the
  // counter.
  void TakeSorted(std::vector<std::pair<std::string, uint32_t>>* out, std::vector<uint32_t>* hashes) {
    std::sort(entries_.begin(), entries_.end(), [this](const Entry& a, const Entry& b) {
      if (a.prefix != b.prefix) return a.prefix < b.prefix;
      return View(a) < View(b);
    });
    out->reserve(out->size() + entries_.size());
    hashes->reserve(hashes->size() + entries_.size());
    for (const Entry& e : entries_) {
      out->emplace_back(std::string(View(e)), e.count);
      hashes->push_back(static_cast<uint32_t>(e.hash));
    }
    if (slots_.size() > 16 * kFirstSlots) {
      slots_.assign(kFirstSlots, 0);  // grown by a huge text: do not clear it all every time
      entries_ = std::vector<Entry>();
      bytes_ = std::string();
    } else {
      std::fill(slots_.begin(), slots_.end(), 0);
      entries_.clear();
      bytes_.clear();
    }
  }

 private:
  static constexpr size_t kFirstSlots = 256;
  struct Entry {
    uint64_t hash;
    uint64_t prefix;
    uint32_t offset;
    uint32_t size;
    uint32_t count;
  };
  std::string_view View(const Entry& e) const { return std::string_view(bytes_.data() + e.offset, e.size); }
  void Grow() {
    slots_.assign(slots_.size() * 2, 0);
    const size_t mask = slots_.size() - 1;
    for (size_t e = 0; e < entries_.size(); e++) {
      size_t i = static_cast<size_t>(entries_[e].hash) & mask;
      while (slots_[i] != 0) i = (i + 1) & mask;
      slots_[i] = static_cast<uint32_t>(e + 1);
    }
  }

  std::vector<uint32_t> slots_ = std::vector<uint32_t>(kFirstSlots, 0);  // entry index + 1; 0: empty
  std::vector<Entry> entries_;
  std::string bytes_;
};

}  // namespace

Status AnalyzeDoc(const Analyzer& analyzer, Embedder* embedder, std::string_view key, uint64_t seq,
                  std::string_view value, AnalyzedDoc* doc) {
  doc->key.assign(key);
  doc->seq = seq;
  doc->value_hash = ValueHash(value);
  doc->terms.clear();
  doc->term_hashes.clear();
  doc->vector.clear();
  std::string scratch;  // only for text a JSON parser had to build
  const std::string_view text = ExtractTextView(value, &scratch);
  // Terms are counted as they come (a thread's table, reused), and only the
  // distinct ones are sorted: sorting every token by memcmp was a quarter
  // of the analysis.
  TermCounter& counter = TermCounter::ForThread();
  size_t tokens = 0;
  // The built-in embedder's features are the analyzer's words before stop
  // words and stemming: one pass over the text gives both, each token
  // hashed once for the stem cache, the sketch and the counter.
  const int sketch_dim = embedder != nullptr && analyzer.options().strip_diacritics ? HashingEmbedderDimension(embedder) : 0;
  if (sketch_dim > 0) {
    HashingSketch sketch;
    analyzer.ForEachRawToken(text, [&](const Analyzer::RawToken& t) {
      sketch.Add(t.raw, t.raw_hash);
      if (!t.term.empty()) {
        counter.Add(t.term, t.term_hash);
        tokens++;
      }
    });
    std::vector<float> vector;
    sketch.Finish(sketch_dim, &vector);
    if (std::any_of(vector.begin(), vector.end(), [](float f) { return f != 0.0f; })) doc->vector = std::move(vector);
    embedder = nullptr;  // done
  } else {
    analyzer.ForEachRawToken(text, [&](const Analyzer::RawToken& t) {
      if (!t.term.empty()) {
        counter.Add(t.term, t.term_hash);
        tokens++;
      }
    });
  }
  doc->length = static_cast<uint32_t>(std::min<size_t>(tokens, UINT32_MAX));
  counter.TakeSorted(&doc->terms, &doc->term_hashes);
  if (embedder != nullptr && !text.empty()) {
    std::vector<std::vector<float>> vectors;
    Status s = embedder->Embed({std::string_view(text)}, &vectors);
    if (!s.ok()) return s;
    if (vectors.size() != 1 || vectors[0].size() != static_cast<size_t>(embedder->dimension())) {
      return Status::InvalidArgument("embedder " + embedder->name() + " returned a vector of the wrong dimension");
    }
    bool any = false;
    for (float f : vectors[0]) {
      if (f != 0.0f) any = true;
      if (!std::isfinite(f)) return Status::InvalidArgument("embedder " + embedder->name() + " returned a non-finite value");
    }
    if (any) doc->vector = std::move(vectors[0]);
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Format (docs/format/index.md)

namespace {

// 2: vectors as binary16 (1: float32, still read; see docs/format/index.md).
constexpr uint32_t kFormatVersion = 2;
constexpr uint32_t kOldestFormatVersion = 1;
constexpr uint64_t kMagic = 0x315844495453564bull;  // the bytes "KVSTIDX1", little-endian
constexpr size_t kFooterSize = 40;

enum SectionKind : uint32_t {
  kProperties = 1,
  kDocs = 2,
  kTerms = 3,
  kForward = 4,
  kVectors = 5,
  kHnsw = 6,
  // Zero bytes before the vectors, so that their floats start at a multiple
  // of kVectorAlignment from the file's start: a reader then uses them
  // where they are. Readers skip it as they skip any kind they do not use.
  kPadding = 7,
};
constexpr size_t kVectorAlignment = 64;

// HNSW parameters: M links per node (2M on level 0); construction and
// search beam widths. Recall@10 is ~0.99 on the hashing embedder's vectors.
constexpr size_t kHnswM = 16;
constexpr size_t kHnswEfConstruction = 100;
constexpr size_t kHnswEfSearch = 96;
constexpr size_t kHnswMaxLevel = 32;
constexpr uint32_t kMaxDimension = 1 << 16;

// Bounds-checked decoding: every getter fails instead of reading past the end.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  // One byte, the common case (small deltas and counts), inline: the
  // validation at open decodes every posting and forward entry.
  bool U32(uint32_t* v) {
    if (!in_.empty() && static_cast<unsigned char>(in_[0]) < 0x80) {
      *v = static_cast<unsigned char>(in_[0]);
      in_.remove_prefix(1);
      return true;
    }
    return GetVarint32(&in_, v);
  }
  bool U64(uint64_t* v) { return GetVarint64(&in_, v); }
  bool Fixed64(uint64_t* v) {
    if (in_.size() < 8) return false;
    *v = DecodeFixed64(in_.data());
    in_.remove_prefix(8);
    return true;
  }
  bool Bytes(std::string_view* v) { return GetLengthPrefixed(&in_, v); }
  bool Raw(size_t n, std::string_view* v) {
    if (in_.size() < n) return false;
    *v = in_.substr(0, n);
    in_.remove_prefix(n);
    return true;
  }
  bool empty() const { return in_.empty(); }
  std::string_view rest() const { return in_; }

 private:
  std::string_view in_;
};

// Encodes into a string through a pointer, room made ahead a record at a
// time: std::string::append per varint (a memcpy call for a byte or two,
// behind a capacity check) was about a third of SegmentWriter::Finish.
class Encoder {
 public:
  explicit Encoder(std::string* out) : out_(out), pos_(out->size()) {}
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;
  ~Encoder() { out_->resize(pos_); }
  // Room for n more bytes: every write below needs it made first.
  void Reserve(size_t n) {
    if (pos_ + n > out_->size()) out_->resize(std::max(pos_ + n, 2 * out_->size()));
  }
  void Varint32(uint32_t v) { pos_ = static_cast<size_t>(EncodeVarint32(out_->data() + pos_, v) - out_->data()); }
  void Varint64(uint64_t v) {
    auto* p = reinterpret_cast<unsigned char*>(out_->data() + pos_);
    for (; v >= 0x80; v >>= 7) *p++ = static_cast<unsigned char>(v | 0x80);
    *p++ = static_cast<unsigned char>(v);
    pos_ = static_cast<size_t>(reinterpret_cast<char*>(p) - out_->data());
  }
  void Fixed64(uint64_t v) {
    EncodeFixed64(out_->data() + pos_, v);
    pos_ += 8;
  }
  void Bytes(std::string_view b) {
    std::memcpy(out_->data() + pos_, b.data(), b.size());
    pos_ += b.size();
  }
  void LengthPrefixed(std::string_view b) {
    Varint32(static_cast<uint32_t>(b.size()));
    Bytes(b);
  }
  size_t size() const { return pos_; }

 private:
  std::string* const out_;
  size_t pos_;  // bytes written; the string's size beyond it is room
};

struct HnswGraph {
  uint32_t max_level = 0;
  uint32_t entry_point = 0;
  std::vector<uint32_t> levels;                          // per node
  std::vector<std::vector<std::vector<uint32_t>>> links;  // node -> level -> neighbours
};

}  // namespace

struct Segment::Hnsw {
  std::unique_ptr<hnswlib::InnerProductSpace> space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> index;
};

SegmentWriter::SegmentWriter(const IndexConfig& config) : config_(config), fingerprint_(config.Fingerprint()) {}
SegmentWriter::~SegmentWriter() = default;

void SegmentWriter::Add(AnalyzedDoc doc) {
  owned_.push_back(std::move(doc));
  docs_.push_back(&owned_.back());
}

void SegmentWriter::AddBorrowed(const AnalyzedDoc* doc) { docs_.push_back(doc); }

bool SegmentWriter::HasVector(const AnalyzedDoc& doc) const {
  return config_.dimension > 0 && !doc.vector.empty() && doc.vector.size() == static_cast<size_t>(config_.dimension);
}

Status SegmentWriter::Finish(WritableFile* file) {
  std::string contents;
  Status s = Finish(&contents);
  if (!s.ok()) return s;
  return file->Append(contents);
}

Status SegmentWriter::Finish(std::string* out) {
  auto table_order = [](const AnalyzedDoc* a, const AnalyzedDoc* b) {
    int c = a->key.compare(b->key);
    return c != 0 ? c < 0 : a->seq > b->seq;
  };
  // Flushes and compactions add docs in table order already: a check is
  // cheaper than a merge sort's moves of every doc.
  if (!std::is_sorted(docs_.begin(), docs_.end(), table_order)) {
    std::stable_sort(docs_.begin(), docs_.end(), table_order);
  }
  // A (key, seq) twice would be one version indexed twice: keep the first.
  docs_.erase(std::unique(docs_.begin(), docs_.end(),
                          [](const AnalyzedDoc* a, const AnalyzedDoc* b) { return a->key == b->key && a->seq == b->seq; }),
              docs_.end());

  // Term dictionary: term -> postings (doc id, tf), doc ids ascending. Terms
  // get provisional ids in a flat hash table (an ordered map's string
  // compares, then std::unordered_map's node walks, were most of a flush's
  // cost), then their final ids by sorting the distinct terms once.
  // A slot holds the term's hash beside its id, so that probing past other
  // terms reads no entry; an entry holds the term's length, first 8 bytes
  // and df, so that finding a term already seen (nearly every occurrence)
  // compares those and counts it in one cache line, not in the bytes of
  // the doc that brought it first (a miss each time: memcmp on them was a
  // fifth of Finish) nor in arrays of their own.
  struct Slot {
    uint32_t hash;
    uint32_t id_plus_1;  // provisional id + 1; 0: empty
  };
  struct Known {
    uint64_t prefix;
    uint32_t size;
    uint32_t df;
  };
  std::vector<Slot> slots(1024, Slot{0, 0});
  std::vector<Known> known;                   // by provisional id
  std::vector<std::string_view> names;        // by provisional id
  // Every doc's (provisional id, tf), in doc order: the passes below read
  // these rather than the docs' own term lists again, which are scattered
  // over the heap (a cache miss a doc, twice more).
  std::vector<std::pair<uint32_t, uint32_t>> doc_terms;
  auto provisional_id = [&](std::string_view term, uint32_t h) -> uint32_t {
    if (2 * (names.size() + 1) > slots.size()) {
      std::vector<Slot> bigger(slots.size() * 2, Slot{0, 0});
      const size_t mask = bigger.size() - 1;
      for (const Slot& slot : slots) {
        if (slot.id_plus_1 == 0) continue;
        size_t i = slot.hash & mask;
        while (bigger[i].id_plus_1 != 0) i = (i + 1) & mask;
        bigger[i] = slot;
      }
      slots.swap(bigger);
    }
    uint64_t prefix = 0;
    std::memcpy(&prefix, term.data(), std::min<size_t>(term.size(), 8));
    const size_t mask = slots.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot slot = slots[i];
      if (slot.id_plus_1 == 0) {
        const auto p = static_cast<uint32_t>(names.size());
        slots[i] = Slot{h, p + 1};
        known.push_back(Known{prefix, static_cast<uint32_t>(term.size()), 0});
        names.push_back(term);
        return p;
      }
      if (slot.hash != h) continue;
      const uint32_t p = slot.id_plus_1 - 1;
      const Known& k = known[p];
      if (k.size == term.size() && k.prefix == prefix && (term.size() <= 8 || names[p].substr(8) == term.substr(8))) {
        return p;
      }
    }
  };
  std::vector<size_t> doc_term_start(docs_.size() + 1, 0);  // where each doc's entries of doc_terms begin
  uint64_t doc_count = 0, total_length = 0, max_seq = 0;
  for (uint32_t id = 0; id < docs_.size(); id++) {
    const AnalyzedDoc& d = *docs_[id];
    // Each doc's term list is a heap block of its own, ~40 bytes a term,
    // that the hardware prefetchers find only once it is being read: ask
    // for the next doc's while this one's terms are looked up.
    if (id + 2 < docs_.size()) __builtin_prefetch(docs_[id + 2]);
    if (id + 1 < docs_.size()) {
      const AnalyzedDoc& next = *docs_[id + 1];
      const char* t = reinterpret_cast<const char*>(next.terms.data());
      const size_t bytes = next.terms.size() * sizeof(next.terms[0]);
      for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch(t + b);
      __builtin_prefetch(next.term_hashes.data());
    }
    doc_term_start[id] = doc_terms.size();
    // The analysis' (or Segment::FindDoc's) hashes when the doc has them.
    const bool hashed = d.term_hashes.size() == d.terms.size();
    for (size_t t = 0; t < d.terms.size(); t++) {
      const auto& [term, tf] = d.terms[t];
      const uint32_t p = provisional_id(term, hashed ? d.term_hashes[t] : static_cast<uint32_t>(TokenHash(term)));
      known[p].df++;
      doc_terms.emplace_back(p, tf);
    }
    if (d.length > 0) {
      doc_count++;
      total_length += d.length;
    }
    max_seq = std::max(max_seq, d.seq);
  }
  doc_term_start[docs_.size()] = doc_terms.size();
  // Postings in one array, each term's (doc id, tf) pairs together in doc
  // order (a counting sort by term): a growing vector per term was a
  // reallocation and a cache miss per posting.
  std::vector<size_t> list_start(names.size() + 1, 0);
  for (uint32_t p = 0; p < names.size(); p++) list_start[p + 1] = list_start[p] + known[p].df;
  std::vector<std::pair<uint32_t, uint32_t>> postings(doc_terms.size());
  {
    std::vector<size_t> cursor(list_start.begin(), list_start.end() - 1);
    for (uint32_t id = 0; id < docs_.size(); id++) {
      for (size_t i = doc_term_start[id]; i < doc_term_start[id + 1]; i++) {
        const auto [p, tf] = doc_terms[i];
        postings[cursor[p]++] = {id, tf};
      }
    }
  }
  std::vector<uint32_t> order(names.size());  // final id -> provisional id
  for (uint32_t i = 0; i < order.size(); i++) order[i] = i;
  // By the first 8 bytes as a big-endian integer (zero-padded: where two
  // prefixes differ, the integers order them as the bytes do), the bytes
  // only on a tie: comparing the terms themselves read them from the docs,
  // a cache miss each.
  std::sort(order.begin(), order.end(), [&names, &known](uint32_t a, uint32_t b) {
    const uint64_t x = __builtin_bswap64(known[a].prefix), y = __builtin_bswap64(known[b].prefix);
    return x != y ? x < y : names[a] < names[b];
  });
  std::vector<uint32_t> final_id(names.size());
  for (uint32_t i = 0; i < order.size(); i++) final_id[order[i]] = i;

  // The file image is *out: the small sections are appended to it when
  // made, the vectors (most of the bytes) are written into it directly, not
  // into a section string first and then copied.
  out->clear();
  std::string entries;  // the directory after its count
  uint32_t num_sections = 0;
  auto end_section = [&](uint32_t kind, size_t offset) {
    const size_t size = out->size() - offset;
    PutVarint32(&entries, kind);
    PutVarint64(&entries, offset);
    PutVarint64(&entries, size);
    PutFixed64(&entries, Checksum64(std::string_view(out->data() + offset, size), kind));
    num_sections++;
  };
  auto emit = [&](uint32_t kind, const std::string& bytes) {
    const size_t offset = out->size();
    out->append(bytes);
    end_section(kind, offset);
  };
  std::string props;
  PutLengthPrefixed(&props, fingerprint_);
  PutVarint64(&props, docs_.size());
  PutVarint64(&props, doc_count);
  PutVarint64(&props, total_length);
  PutVarint32(&props, static_cast<uint32_t>(std::max(config_.dimension, 0)));
  PutVarint64(&props, max_seq);


  std::string docs;
  {
    Encoder e(&docs);
    for (const AnalyzedDoc* p : docs_) {
      const AnalyzedDoc& d = *p;
      e.Reserve(5 + d.key.size() + 10 + 5 + 8);
      e.LengthPrefixed(d.key);
      e.Varint64(d.seq);
      e.Varint32(d.length);
      e.Fixed64(d.value_hash);
    }
  }

  std::string terms;
  {
    Encoder e(&terms);
    e.Reserve(5);
    e.Varint32(static_cast<uint32_t>(names.size()));
    std::string list_bytes;
    for (uint32_t p : order) {
      list_bytes.clear();
      {
        Encoder list(&list_bytes);
        list.Reserve(10 * size_t{known[p].df});
        uint32_t prev = 0;
        for (size_t i = list_start[p]; i < list_start[p + 1]; i++) {
          const auto [id, tf] = postings[i];
          list.Varint32(id - prev);
          list.Varint32(tf);
          prev = id;
        }
      }
      e.Reserve(5 + names[p].size() + 5 + 5 + list_bytes.size());
      e.LengthPrefixed(names[p]);
      e.Varint32(known[p].df);
      e.LengthPrefixed(list_bytes);
    }
  }

  std::string forward;
  {
    Encoder e(&forward);
    std::vector<std::pair<uint32_t, uint32_t>> ids;
    for (uint32_t id = 0; id < docs_.size(); id++) {
      ids.clear();
      for (size_t i = doc_term_start[id]; i < doc_term_start[id + 1]; i++) {
        ids.emplace_back(final_id[doc_terms[i].first], doc_terms[i].second);
      }
      // Ascending already when the doc's terms are (as the analysis and
      // Segment::FindDoc leave them): final ids are in term order.
      if (!std::is_sorted(ids.begin(), ids.end())) std::sort(ids.begin(), ids.end());
      e.Reserve(5 + 10 * ids.size());
      e.Varint32(static_cast<uint32_t>(ids.size()));
      uint32_t prev = 0;
      for (const auto& [term_id, tf] : ids) {
        e.Varint32(term_id - prev);
        e.Varint32(tf);
        prev = term_id;
      }
    }
  }

  std::vector<uint32_t> vector_docs;
  for (uint32_t id = 0; id < docs_.size(); id++) {
    if (HasVector(*docs_[id])) vector_docs.push_back(id);
  }
  const size_t dim = static_cast<size_t>(std::max(config_.dimension, 0));
  // Sized once: growing by doubling copied the floats (most of a segment's
  // bytes) about twice more. The graph, rare, may grow it once.
  out->reserve(props.size() + docs.size() + terms.size() + forward.size() + 10 + 5 * vector_docs.size() +
               vector_docs.size() * dim * sizeof(uint16_t) + kVectorAlignment + 64 + kFooterSize);
  emit(kProperties, props);
  emit(kDocs, docs);
  emit(kTerms, terms);
  emit(kForward, forward);
  if (dim > 0 && !vector_docs.empty()) {
    std::string head;  // the section's bytes before the floats
    PutVarint32(&head, static_cast<uint32_t>(dim));
    PutVarint32(&head, static_cast<uint32_t>(vector_docs.size()));
    uint32_t prev_id = 0;
    for (uint32_t id : vector_docs) {
      PutVarint32(&head, id - prev_id);
      prev_id = id;
    }
    const size_t misaligned = (out->size() + head.size()) % kVectorAlignment;
    if (misaligned != 0) {
      const size_t pad_offset = out->size();
      out->append(kVectorAlignment - misaligned, '\0');
      end_section(kPadding, pad_offset);
    }
    const size_t offset = out->size();
    out->append(head);
    const size_t halves_at = out->size();
    out->resize(halves_at + vector_docs.size() * dim * sizeof(uint16_t));
    auto* halves = reinterpret_cast<uint16_t*>(out->data() + halves_at);  // aligned: see the padding above
    for (size_t v = 0; v < vector_docs.size(); v++) {
      FloatsToHalves(docs_[vector_docs[v]]->vector.data(), dim, halves + v * dim);
    }
    static_assert(std::endian::native == std::endian::little, "binary16 values are stored little-endian");
    end_section(kVectors, offset);

    const size_t min_vectors = config_.hnsw_min_vectors > 0 ? config_.hnsw_min_vectors : HnswMinVectors(config_.dimension);
    if (vector_docs.size() >= min_vectors) {
      std::vector<const float*> points;
      points.reserve(vector_docs.size());
      for (uint32_t id : vector_docs) points.push_back(docs_[id]->vector.data());
      std::string graph;
      Status s = BuildHnswGraph(points, dim, kHnswM, kHnswEfConstruction, &graph);
      if (!s.ok()) return s;
      emit(kHnsw, graph);
    }
  }

  std::string directory;
  PutVarint32(&directory, num_sections);
  directory.append(entries);
  const uint64_t directory_offset = out->size();
  out->append(directory);
  std::string footer;
  PutFixed64(&footer, directory_offset);
  PutFixed64(&footer, directory.size());
  PutFixed64(&footer, Checksum64(directory));
  PutFixed32(&footer, kFormatVersion);
  PutFixed32(&footer, Checksum32(footer));
  PutFixed64(&footer, kMagic);
  out->append(footer);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Reading

Segment::~Segment() = default;

bool Segment::has_hnsw() const { return hnsw_ != nullptr; }

Status Segment::Open(std::unique_ptr<RandomAccessFile> file, uint64_t file_size, const std::string& name,
                     std::shared_ptr<Segment>* out) {
  if (file_size < kFooterSize) return Status::Corruption(name + ": index segment too short");
  if (file_size > (uint64_t{1} << 32)) return Status::Corruption(name + ": index segment larger than 4 GiB");
  std::string contents;
  contents.resize(file_size);
  std::string_view result;
  Status s = file->Read(0, file_size, &result, contents.data());
  if (!s.ok()) return s;
  if (result.size() != file_size) return Status::Corruption(name + ": index segment truncated");
  if (result.data() != contents.data()) std::memcpy(contents.data(), result.data(), file_size);
  return OpenContents(std::move(contents), name, out);
}

Status Segment::OpenContents(std::string contents, const std::string& name, std::shared_ptr<Segment>* out) {
  std::shared_ptr<Segment> segment(new Segment());
  segment->contents_ = std::move(contents);
  Status s;
  try {
    s = segment->Parse(name);
  } catch (const std::exception& e) {  // allocation failure, or hnswlib
    s = Status::Corruption(name + ": index segment: " + e.what());
  }
  if (!s.ok()) return s;
  *out = std::move(segment);
  return Status::OK();
}

Status Segment::Parse(const std::string& name) {
  auto corrupt = [&name](std::string_view what) {
    return Status::Corruption(name + ": index segment: " + std::string(what));
  };
  const std::string_view file(contents_);
  if (file.size() < kFooterSize) return corrupt("too short");
  const char* footer = file.data() + file.size() - kFooterSize;
  if (DecodeFixed64(footer + 32) != kMagic) return corrupt("bad magic");
  if (DecodeFixed32(footer + 28) != Checksum32(std::string_view(footer, 28))) return corrupt("footer checksum mismatch");
  const uint32_t version = DecodeFixed32(footer + 24);
  if (version < kOldestFormatVersion || version > kFormatVersion) {
    return corrupt("unsupported format version " + std::to_string(version));
  }
  const size_t element_size = version >= 2 ? sizeof(uint16_t) : sizeof(float);
  const uint64_t dir_offset = DecodeFixed64(footer);
  const uint64_t dir_size = DecodeFixed64(footer + 8);
  const uint64_t body = file.size() - kFooterSize;
  if (dir_offset > body || dir_size != body - dir_offset) return corrupt("bad directory handle");
  std::string_view directory = file.substr(dir_offset, dir_size);
  if (Checksum64(directory) != DecodeFixed64(footer + 16)) return corrupt("directory checksum mismatch");

  std::string_view sections[kHnsw + 1];
  bool present[kHnsw + 1] = {};
  Reader dir(directory);
  uint32_t num_sections;
  if (!dir.U32(&num_sections)) return corrupt("bad directory");
  for (uint32_t i = 0; i < num_sections; i++) {
    uint32_t kind;
    uint64_t offset, size, checksum;
    if (!dir.U32(&kind) || !dir.U64(&offset) || !dir.U64(&size) || !dir.Fixed64(&checksum)) {
      return corrupt("bad directory");
    }
    if (offset > dir_offset || size > dir_offset - offset) return corrupt("section out of bounds");
    std::string_view bytes = file.substr(offset, size);
    if (Checksum64(bytes, kind) != checksum) return corrupt("checksum mismatch in section " + std::to_string(kind));
    if (kind < kProperties || kind > kHnsw) continue;  // from a newer writer: not needed to answer queries
    if (present[kind]) return corrupt("duplicate section");
    present[kind] = true;
    sections[kind] = bytes;
  }
  if (!dir.empty()) return corrupt("bad directory");
  for (uint32_t k : {kProperties, kDocs, kTerms, kForward}) {
    if (!present[k]) return corrupt("missing section " + std::to_string(k));
  }
  if (present[kHnsw] && !present[kVectors]) return corrupt("graph without vectors");

  // Properties.
  Reader props(sections[kProperties]);
  std::string_view fingerprint;
  uint64_t num_docs, doc_count, total_length, max_seq;
  uint32_t dimension;
  if (!props.Bytes(&fingerprint) || !props.U64(&num_docs) || !props.U64(&doc_count) || !props.U64(&total_length) ||
      !props.U32(&dimension) || !props.U64(&max_seq)) {
    return corrupt("bad properties");
  }
  if (dimension > kMaxDimension) return corrupt("bad dimension");
  // Each doc takes at least 11 bytes: no count can exceed the file.
  if (num_docs > file.size() / 11 || doc_count > num_docs) return corrupt("bad doc count");
  fingerprint_.assign(fingerprint);
  dimension_ = static_cast<int>(dimension);

  // Docs.
  Reader docs(sections[kDocs]);
  docs_.reserve(num_docs);
  uint64_t seen_count = 0, seen_length = 0, seen_max_seq = 0;
  for (uint64_t i = 0; i < num_docs; i++) {
    Doc d{};
    if (!docs.Bytes(&d.key) || !docs.U64(&d.seq) || !docs.U32(&d.length) || !docs.Fixed64(&d.value_hash)) {
      return corrupt("bad doc table");
    }
    if (!docs_.empty()) {
      const Doc& prev = docs_.back();
      int c = prev.key.compare(d.key);
      if (c > 0 || (c == 0 && prev.seq <= d.seq)) return corrupt("docs out of order");
    }
    d.vector_id = -1;
    if (d.length > 0) {
      seen_count++;
      seen_length += d.length;
    }
    seen_max_seq = std::max(seen_max_seq, d.seq);
    docs_.push_back(d);
  }
  if (!docs.empty()) return corrupt("bad doc table");
  if (seen_count != doc_count || seen_length != total_length || seen_max_seq != max_seq) {
    return corrupt("properties disagree with the doc table");
  }
  doc_count_ = doc_count;
  total_length_ = total_length;
  max_seq_ = max_seq;

  // Terms and postings.
  Reader terms(sections[kTerms]);
  uint32_t num_terms;
  if (!terms.U32(&num_terms) || num_terms > sections[kTerms].size() / 3) return corrupt("bad term dictionary");
  terms_.reserve(num_terms);
  for (uint32_t t = 0; t < num_terms; t++) {
    Term term{};
    if (!terms.Bytes(&term.term) || !terms.U32(&term.df) || !terms.Bytes(&term.postings)) {
      return corrupt("bad term dictionary");
    }
    if (!terms_.empty() && terms_.back().term >= term.term) return corrupt("terms out of order");
    if (term.df == 0 || term.df > num_docs) return corrupt("bad document frequency");
    Reader list(term.postings);
    uint64_t id = 0;
    for (uint32_t j = 0; j < term.df; j++) {
      uint32_t delta, tf;
      if (!list.U32(&delta) || !list.U32(&tf)) return corrupt("bad postings");
      if ((j > 0 && delta == 0) || tf == 0) return corrupt("bad postings");
      id += delta;
      if (id >= num_docs) return corrupt("posting names a missing doc");
    }
    if (!list.empty()) return corrupt("bad postings");
    term.hash = static_cast<uint32_t>(TokenHash(term.term));
    terms_.push_back(term);
  }
  if (!terms.empty()) return corrupt("bad term dictionary");

  // Forward lists: per doc, (term id, tf) ascending, tfs summing to its length.
  forward_ = sections[kForward];
  Reader forward(forward_);
  for (Doc& d : docs_) {
    d.forward_offset = static_cast<uint32_t>(forward_.size() - forward.rest().size());
    uint32_t n;
    if (!forward.U32(&n) || n > num_terms) return corrupt("bad forward list");
    uint64_t id = 0, sum = 0;
    for (uint32_t j = 0; j < n; j++) {
      uint32_t delta, tf;
      if (!forward.U32(&delta) || !forward.U32(&tf)) return corrupt("bad forward list");
      if ((j > 0 && delta == 0) || tf == 0) return corrupt("bad forward list");
      id += delta;
      sum += tf;
      if (id >= num_terms) return corrupt("forward list names a missing term");
    }
    if (sum != d.length) return corrupt("forward list disagrees with the doc length");
  }
  if (!forward.empty()) return corrupt("bad forward list");

  exact_.reserve(docs_.size());
  for (uint32_t id = 0; id < docs_.size(); id++) exact_.emplace_back(docs_[id].value_hash, id);
  std::sort(exact_.begin(), exact_.end());

  if (!present[kVectors]) return Status::OK();

  // Vectors.
  Reader vectors(sections[kVectors]);
  uint32_t vdim, num_vectors;
  if (!vectors.U32(&vdim) || !vectors.U32(&num_vectors)) return corrupt("bad vectors");
  if (vdim != dimension || vdim == 0 || num_vectors > num_docs || num_vectors == 0) return corrupt("bad vectors");
  vector_docs_.reserve(num_vectors);
  uint64_t id = 0;
  for (uint32_t v = 0; v < num_vectors; v++) {
    uint32_t delta;
    if (!vectors.U32(&delta) || (v > 0 && delta == 0)) return corrupt("bad vector ids");
    id += delta;
    if (id >= num_docs) return corrupt("vector names a missing doc");
    vector_docs_.push_back(static_cast<uint32_t>(id));
    docs_[id].vector_id = static_cast<int32_t>(v);
    vector_seqs_.push_back(docs_[id].seq);
  }
  std::sort(vector_seqs_.begin(), vector_seqs_.end());
  const size_t dim = vdim;
  std::string_view elements = vectors.rest();
  if (elements.size() != size_t{num_vectors} * dim * element_size) return corrupt("bad vector data");

  if (!present[kHnsw]) {
    if (element_size == sizeof(uint16_t) && reinterpret_cast<uintptr_t>(elements.data()) % alignof(uint16_t) == 0) {
      // Where the file has them (a writer aligns them, see kPadding): no
      // copy of most of the segment's bytes, and none of the rest.
      vectors_ = reinterpret_cast<const uint16_t*>(elements.data());
    } else {
      // A version 1 segment's floats become binary16 too, so that its
      // scores are those of the same docs written by this version.
      vector_storage_.reset(new uint16_t[size_t{num_vectors} * dim]);
      if (element_size == sizeof(uint16_t)) {
        std::memcpy(vector_storage_.get(), elements.data(), elements.size());
      } else {
        std::vector<float> floats(dim);
        for (size_t v = 0; v < num_vectors; v++) {
          std::memcpy(floats.data(), elements.data() + v * dim * sizeof(float), dim * sizeof(float));
          FloatsToHalves(floats.data(), dim, vector_storage_.get() + v * dim);
        }
      }
      vectors_ = vector_storage_.get();
      ReleaseCopiedSections(sections[kVectors].data() - contents_.data());
    }
    BuildScanCodes();
    return Status::OK();
  }

  // The graph: validated completely before hnswlib sees it, since hnswlib
  // trusts every link it follows.
  Reader graph(sections[kHnsw]);
  uint32_t m, ef_construction, max_level, entry_point;
  if (!graph.U32(&m) || !graph.U32(&ef_construction) || !graph.U32(&max_level) || !graph.U32(&entry_point)) {
    return corrupt("bad graph");
  }
  if (m < 2 || m > 256 || max_level > kHnswMaxLevel || entry_point >= num_vectors) return corrupt("bad graph");
  HnswGraph g;
  g.levels.resize(num_vectors);
  g.links.resize(num_vectors);
  uint32_t seen_max_level = 0;
  for (uint32_t v = 0; v < num_vectors; v++) {
    uint32_t level;
    if (!graph.U32(&level) || level > max_level) return corrupt("bad graph level");
    g.levels[v] = level;
    seen_max_level = std::max(seen_max_level, level);
    g.links[v].resize(level + 1);
    for (uint32_t l = 0; l <= level; l++) {
      uint32_t count;
      if (!graph.U32(&count) || count > (l == 0 ? 2 * m : m)) return corrupt("bad graph links");
      auto& list = g.links[v][l];
      list.resize(count);
      for (uint32_t j = 0; j < count; j++) {
        if (!graph.U32(&list[j]) || list[j] >= num_vectors) return corrupt("bad graph link");
      }
    }
  }
  if (!graph.empty() || seen_max_level != max_level || g.levels[entry_point] != max_level) {
    return corrupt("bad graph");
  }
  // A link from v on level l must point at a node that has level l.
  for (uint32_t v = 0; v < num_vectors; v++) {
    for (uint32_t l = 1; l < g.links[v].size(); l++) {
      for (uint32_t to : g.links[v][l]) {
        if (g.levels[to] < l) return corrupt("graph link to a missing level");
      }
    }
  }

  auto h = std::make_unique<Hnsw>();
  h->space = std::make_unique<hnswlib::InnerProductSpace>(dim);
  h->index = std::make_unique<hnswlib::HierarchicalNSW<float>>(h->space.get(), num_vectors, m, ef_construction, 42);
  hnswlib::HierarchicalNSW<float>& idx = *h->index;
  for (uint32_t v = 0; v < num_vectors; v++) {
    std::memset(idx.data_level0_memory_ + size_t{v} * idx.size_data_per_element_, 0, idx.size_data_per_element_);
    idx.element_levels_[v] = static_cast<int>(g.levels[v]);
    if (g.levels[v] > 0) {
      const size_t bytes = idx.size_links_per_element_ * g.levels[v] + 1;
      idx.linkLists_[v] = static_cast<char*>(std::malloc(bytes));
      if (idx.linkLists_[v] == nullptr) {
        idx.element_levels_[v] = 0;  // so the destructor does not free it
        idx.cur_element_count = v;
        return corrupt("out of memory loading the graph");
      }
      std::memset(idx.linkLists_[v], 0, bytes);
    } else {
      idx.linkLists_[v] = nullptr;
    }
    idx.cur_element_count = v + 1;  // the destructor frees link lists below this
    for (uint32_t l = 0; l <= g.levels[v]; l++) {
      hnswlib::linklistsizeint* ll = idx.get_linklist_at_level(v, static_cast<int>(l));
      const auto& list = g.links[v][l];
      idx.setListCount(ll, static_cast<unsigned short>(list.size()));
      auto* ids = reinterpret_cast<hnswlib::tableint*>(ll + 1);
      for (size_t j = 0; j < list.size(); j++) ids[j] = list[j];
    }
    auto* data = reinterpret_cast<float*>(idx.getDataByInternalId(v));
    if (element_size == sizeof(uint16_t)) {
      std::vector<uint16_t> halves(dim);  // the file's bytes may not be aligned for them
      std::memcpy(halves.data(), elements.data() + size_t{v} * dim * sizeof(uint16_t), dim * sizeof(uint16_t));
      HalvesToFloats(halves.data(), dim, data);
    } else {
      std::memcpy(data, elements.data() + size_t{v} * dim * sizeof(float), dim * sizeof(float));
    }
    idx.setExternalLabel(v, v);
    idx.label_lookup_[v] = v;
  }
  idx.maxlevel_ = static_cast<int>(max_level);
  idx.enterpoint_node_ = entry_point;
  idx.setEf(kHnswEfSearch);
  hnsw_ = std::move(h);
  ReleaseCopiedSections(std::min(sections[kVectors].data(), sections[kHnsw].data()) - contents_.data());
  return Status::OK();
}

// The vectors (and graph) now live in their own copies; when they end the
// file, as the writer puts them, keep only the bytes before them.
void Segment::ReleaseCopiedSections(ptrdiff_t keep) {
  const char* old_base = contents_.data();
  auto end_of = [old_base](std::string_view v) { return v.data() + v.size() - old_base; };
  ptrdiff_t needed = end_of(forward_);
  for (const Doc& d : docs_) needed = std::max(needed, end_of(d.key));
  for (const Term& t : terms_) needed = std::max({needed, end_of(t.term), end_of(t.postings)});
  if (keep < needed || keep <= 0 || static_cast<size_t>(keep) >= contents_.size()) return;
  std::string kept(contents_.data(), static_cast<size_t>(keep));
  const char* new_base = kept.data();
  auto rebase = [old_base, new_base](std::string_view* v) {
    if (v->data() != nullptr) *v = std::string_view(new_base + (v->data() - old_base), v->size());
  };
  rebase(&forward_);
  for (Doc& d : docs_) rebase(&d.key);
  for (Term& t : terms_) {
    rebase(&t.term);
    rebase(&t.postings);
  }
  contents_ = std::move(kept);
}

void Segment::CopyVector(uint32_t vector_id, float* out) const {
  const size_t dim = static_cast<size_t>(dimension_);
  if (hnsw_) {
    std::memcpy(out, hnsw_->index->getDataByInternalId(vector_id), dim * sizeof(float));
  } else {
    HalvesToFloats(vectors_ + size_t{vector_id} * dim, dim, out);
  }
}

namespace {

// Table order: key ascending, then seq descending.
bool DocBefore(std::string_view a_key, uint64_t a_seq, std::string_view b_key, uint64_t b_seq) {
  const int c = a_key.compare(b_key);
  return c != 0 ? c < 0 : a_seq > b_seq;
}

}  // namespace

bool Segment::FindDoc(std::string_view key, uint64_t seq, AnalyzedDoc* doc) const {
  size_t cursor = 0;
  return FindDocFrom(key, seq, &cursor, doc);
}

bool Segment::FindDocFrom(std::string_view key, uint64_t seq, size_t* cursor, AnalyzedDoc* doc) const {
  auto before = [&](const Doc& d) { return DocBefore(d.key, d.seq, key, seq); };
  const size_t n = docs_.size();
  size_t lo = std::min(*cursor, n);
  if (lo > 0 && !before(docs_[lo - 1])) lo = 0;  // behind the cursor: search everything
  // Gallop: the first doc not before (key, seq) is in (lo + step / 2, lo + step].
  size_t step = 1;
  while (lo + step <= n && before(docs_[lo + step - 1])) step *= 2;
  const auto first = docs_.begin() + static_cast<ptrdiff_t>(lo + step / 2);
  const auto last = docs_.begin() + static_cast<ptrdiff_t>(std::min(lo + step, n));
  const auto it = std::partition_point(first, last, before);
  const auto i = static_cast<size_t>(it - docs_.begin());
  *cursor = i;
  if (it == docs_.end() || it->key != key || it->seq != seq) return false;
  CopyDoc(i, doc);
  return true;
}

void Segment::CopyDoc(size_t i, AnalyzedDoc* doc) const {
  const auto it = docs_.begin() + static_cast<ptrdiff_t>(i);
  doc->key.assign(it->key);
  doc->seq = it->seq;
  doc->value_hash = it->value_hash;
  doc->length = it->length;
  doc->terms.clear();
  doc->term_hashes.clear();
  Reader forward(forward_.substr(it->forward_offset));
  uint32_t n = 0, id = 0;
  (void)forward.U32(&n);  // validated at open
  doc->terms.reserve(n);
  doc->term_hashes.reserve(n);
  for (uint32_t j = 0; j < n; j++) {
    uint32_t delta = 0, tf = 0;
    (void)forward.U32(&delta);
    (void)forward.U32(&tf);
    id += delta;
    doc->terms.emplace_back(std::string(terms_[id].term), tf);
    doc->term_hashes.push_back(terms_[id].hash);
  }
  doc->vector.clear();
  if (it->vector_id >= 0) {
    doc->vector.resize(static_cast<size_t>(dimension_));
    CopyVector(static_cast<uint32_t>(it->vector_id), doc->vector.data());
  }
}

void Segment::ForEachDoc(const std::function<void(const AnalyzedDoc&)>& fn) const {
  AnalyzedDoc doc;
  for (size_t i = 0; i < docs_.size(); i++) {
    CopyDoc(i, &doc);
    fn(doc);
  }
}

size_t Segment::MemoryUsage() const {
  size_t bytes = sizeof(*this) + contents_.capacity() + docs_.capacity() * sizeof(Doc) +
                 terms_.capacity() * sizeof(Term) + exact_.capacity() * sizeof(exact_[0]) +
                 vector_docs_.capacity() * 4 + vector_seqs_.capacity() * 8;
  if (vector_storage_) bytes += vector_docs_.size() * static_cast<size_t>(dimension_) * sizeof(uint16_t);
  if (codes_) bytes += scales_.size() * (static_cast<size_t>(dimension_) + sizeof(float));
  if (hnsw_) {
    const auto& idx = *hnsw_->index;
    bytes += idx.max_elements_ * (idx.size_data_per_element_ + sizeof(void*) + sizeof(int) + 2 * sizeof(std::mutex));
    for (size_t v = 0; v < idx.cur_element_count; v++) {
      if (idx.element_levels_[v] > 0) bytes += idx.size_links_per_element_ * idx.element_levels_[v];
    }
    bytes += idx.label_lookup_.size() * 32 + idx.max_elements_ * sizeof(unsigned short);  // visited list
  }
  return bytes;
}

void Segment::ExactCandidates(uint64_t value_hash, uint64_t max_seq, std::vector<Candidate>* out) const {
  auto it = std::lower_bound(exact_.begin(), exact_.end(), std::make_pair(value_hash, uint32_t{0}));
  for (; it != exact_.end() && it->first == value_hash; ++it) {
    const Doc& d = docs_[it->second];
    if (d.seq <= max_seq) out->push_back(Candidate{std::string(d.key), d.seq, 0});
  }
}

uint64_t Segment::DocFrequency(std::string_view term) const {
  auto it = std::lower_bound(terms_.begin(), terms_.end(), term,
                             [](const Term& t, std::string_view k) { return t.term < k; });
  return it != terms_.end() && it->term == term ? it->df : 0;
}

void Segment::ScoreTerms(const std::vector<std::string>& terms, const std::vector<double>& idf, double avgdl,
                         bool match_all, uint64_t max_seq, std::vector<Candidate>* out) const {
  if (terms.empty() || idf.size() != terms.size()) return;
  if (avgdl <= 0) avgdl = 1;
  const size_t num_terms = terms.size();
  std::vector<const Term*> found(num_terms, nullptr);
  for (size_t i = 0; i < num_terms; i++) {
    auto it = std::lower_bound(terms_.begin(), terms_.end(), std::string_view(terms[i]),
                               [](const Term& t, std::string_view k) { return t.term < k; });
    if (it != terms_.end() && it->term == terms[i]) {
      found[i] = &*it;
    } else if (match_all) {
      return;
    }
  }
  auto contribution = [&](size_t i, uint32_t id, uint32_t tf) {
    const double norm = kBM25K1 * (1 - kBM25B + kBM25B * docs_[id].length / avgdl);
    return idf[i] * tf * (kBM25K1 + 1) / (tf + norm);
  };
  if (match_all) {
    // Intersect, shortest list first: only its docs are ever scored, and
    // each longer list is one sequential decode merged against them. A
    // doc's contributions are kept per term and summed in query order, so
    // scores are exactly those of summing every posting.
    std::vector<size_t> by_df(num_terms);
    for (size_t i = 0; i < num_terms; i++) by_df[i] = i;
    std::sort(by_df.begin(), by_df.end(), [&found](size_t a, size_t b) { return found[a]->df < found[b]->df; });
    std::vector<uint32_t> ids;
    std::vector<double> parts;  // ids.size() x num_terms
    {
      const size_t i = by_df[0];
      Reader list(found[i]->postings);
      uint32_t id = 0;
      for (uint32_t j = 0; j < found[i]->df; j++) {
        uint32_t delta = 0, tf = 0;
        (void)list.U32(&delta);  // validated at open
        (void)list.U32(&tf);
        id += delta;
        if (docs_[id].seq > max_seq) continue;
        ids.push_back(id);
        parts.resize(parts.size() + num_terms);
        parts[parts.size() - num_terms + i] = contribution(i, id, tf);
      }
    }
    for (size_t r = 1; r < num_terms && !ids.empty(); r++) {
      const size_t i = by_df[r];
      Reader list(found[i]->postings);
      uint32_t remaining = found[i]->df, id = 0, tf = 0;
      bool valid = false;
      auto next = [&] {
        valid = remaining > 0;
        if (!valid) return;
        uint32_t delta = 0;
        (void)list.U32(&delta);  // validated at open
        (void)list.U32(&tf);
        id += delta;
        remaining--;
      };
      next();
      size_t kept = 0;
      for (size_t c = 0; c < ids.size(); c++) {
        while (valid && id < ids[c]) next();
        if (!valid) break;
        if (id != ids[c]) continue;
        std::copy_n(parts.begin() + static_cast<ptrdiff_t>(c * num_terms), num_terms,
                    parts.begin() + static_cast<ptrdiff_t>(kept * num_terms));
        parts[kept * num_terms + i] = contribution(i, id, tf);
        ids[kept++] = id;
      }
      ids.resize(kept);
      parts.resize(kept * num_terms);
    }
    out->reserve(out->size() + ids.size());
    for (size_t c = 0; c < ids.size(); c++) {
      double score = 0;
      for (size_t i = 0; i < num_terms; i++) score += parts[c * num_terms + i];
      const Doc& d = docs_[ids[c]];
      out->push_back(Candidate{std::string(d.key), d.seq, score});
    }
    return;
  }
  struct Hit {
    uint32_t doc;
    double score;
  };
  std::vector<Hit> hits;
  for (size_t i = 0; i < num_terms; i++) {
    if (found[i] == nullptr) continue;
    Reader list(found[i]->postings);
    uint32_t id = 0;
    for (uint32_t j = 0; j < found[i]->df; j++) {
      uint32_t delta = 0, tf = 0;
      (void)list.U32(&delta);  // validated at open
      (void)list.U32(&tf);
      id += delta;
      if (docs_[id].seq > max_seq) continue;
      hits.push_back(Hit{id, contribution(i, id, tf)});
    }
  }
  std::stable_sort(hits.begin(), hits.end(), [](const Hit& a, const Hit& b) { return a.doc < b.doc; });
  for (size_t i = 0; i < hits.size();) {
    size_t j = i;
    double score = 0;
    while (j < hits.size() && hits[j].doc == hits[i].doc) score += hits[j++].score;
    const Doc& d = docs_[hits[i].doc];
    out->push_back(Candidate{std::string(d.key), d.seq, score});
    i = j;
  }
}

namespace {

// Vectors per scan block: 64 codes of one dimension are one cache line, and
// four AVX-512 accumulators keep the FMA units busy.
constexpr size_t kScanBlock = 64;

// acc[j] = sum over the query's non-zero components (dims[i], q[i]) of
// q[i] * block[dims[i] * stride + j], for the kScanBlock vectors of a block.
// stride is the length of a dimension's row of codes (the whole segment's):
// a scan reads each of the query's rows front to back, which the hardware
// prefetchers follow, where rows of one block each (stride 64) made every
// line a cache miss of its own (1M vectors: 10.4 -> 2.5-3.3 ms, one thread).
void ScanBlock(const int8_t* block, size_t stride, const uint32_t* dims, const float* q, size_t nz, float* acc) {
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < nz; i++) {
    const int8_t* c = block + size_t{dims[i]} * stride;
    const __m512 w = _mm512_set1_ps(q[i]);
    a0 = _mm512_fmadd_ps(w, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)))), a0);
    a1 = _mm512_fmadd_ps(w, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16)))), a1);
    a2 = _mm512_fmadd_ps(w, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32)))), a2);
    a3 = _mm512_fmadd_ps(w, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 48)))), a3);
  }
  _mm512_storeu_ps(acc, a0);
  _mm512_storeu_ps(acc + 16, a1);
  _mm512_storeu_ps(acc + 32, a2);
  _mm512_storeu_ps(acc + 48, a3);
#elif defined(__AVX2__)
  __m256 a[8];
  for (auto& x : a) x = _mm256_setzero_ps();
  for (size_t i = 0; i < nz; i++) {
    const int8_t* c = block + size_t{dims[i]} * stride;
    const __m256 w = _mm256_set1_ps(q[i]);
    for (int k = 0; k < 8; k++) {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + 8 * k));
      a[k] = _mm256_fmadd_ps(w, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), a[k]);
    }
  }
  for (int k = 0; k < 8; k++) _mm256_storeu_ps(acc + 8 * k, a[k]);
#else
  for (size_t j = 0; j < kScanBlock; j++) acc[j] = 0;
  for (size_t i = 0; i < nz; i++) {
    const int8_t* c = block + size_t{dims[i]} * stride;
    for (size_t j = 0; j < kScanBlock; j++) acc[j] += q[i] * static_cast<float>(c[j]);
  }
#endif
}

}  // namespace

// Compiled with -march=native with the rest of this file (index/CMakeLists).
float DotProduct(const float* a, const float* b, size_t dim) {
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  // Summed by hand: GCC 12's _mm512_reduce_add_ps trips -Wuninitialized
  // once this function is compiled on its own.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc);
  float dot = 0;
  for (float x : lanes) dot += x;
  for (; i < dim; i++) dot += a[i] * b[i];
  return dot;
#else
  // Eight independent sums: the compiler can keep them in vector lanes
  // without reordering one sum's additions.
  float acc[8] = {};
  size_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    for (size_t j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
  }
  float dot = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < dim; i++) dot += a[i] * b[i];
  return dot;
#endif
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  x &= 0x7fffffff;
  if (x >= 0x7f800000) return sign | (x > 0x7f800000 ? 0x7e00 : 0x7c00);  // NaN (quiet), infinity
  if (x >= 0x477ff000) return sign | 0x7c00;                              // rounds to 65536 or more
  if (x < 0x38800000) {
    // Below 2^-14: a subnormal half, a multiple of 2^-24. The product is
    // exact (a power of two) and nearbyint rounds ties to even.
    float a;
    std::memcpy(&a, &x, sizeof(a));
    return sign | static_cast<uint16_t>(std::nearbyint(a * 0x1p24f));  // 1024 is the smallest normal, as it should be
  }
  // Normal: rebias the exponent, round the 13 dropped bits to nearest even.
  x += (uint32_t{15} - 127) << 23;
  x += 0xfff + ((x >> 13) & 1);
  return sign | static_cast<uint16_t>(x >> 13);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  uint32_t x;
  if (exp == 0) {
    const float f = static_cast<float>(mant) * 0x1p-24f;  // zero or subnormal: exact
    std::memcpy(&x, &f, sizeof(x));
    x |= sign;
  } else if (exp == 31) {
    x = sign | 0x7f800000 | (mant << 13);
  } else {
    x = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, sizeof(f));
  return f;
}

void FloatsToHalves(const float* in, size_t n, uint16_t* out) {
  size_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
#endif
  for (; i < n; i++) out[i] = FloatToHalf(in[i]);
}

void HalvesToFloats(const uint16_t* in, size_t n, float* out) {
  size_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  }
#endif
  for (; i < n; i++) out[i] = HalfToFloat(in[i]);
}

void RoundToHalfPrecision(std::vector<float>* v) {
  uint16_t halves[64];
  for (size_t i = 0; i < v->size(); i += 64) {
    const size_t n = std::min<size_t>(64, v->size() - i);
    FloatsToHalves(v->data() + i, n, halves);
    HalvesToFloats(halves, n, v->data() + i);
  }
}

float DotProductHalf(const uint16_t* a, const float* b, size_t dim) {
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    const __m512 x = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i)));
    acc = _mm512_fmadd_ps(x, _mm512_loadu_ps(b + i), acc);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc);
  float dot = 0;
  for (float x : lanes) dot += x;
  for (; i < dim; i++) dot += HalfToFloat(a[i]) * b[i];
  return dot;
#else
  float dot = 0;
  float x[64];
  for (size_t i = 0; i < dim; i += 64) {
    const size_t n = std::min<size_t>(64, dim - i);
    HalvesToFloats(a + i, n, x);
    dot += DotProduct(x, b + i, n);
  }
  return dot;
#endif
}

namespace {

// The largest magnitude among n binary16 values, as binary16 bits: without
// the sign bit, halves order as their integers do (NaNs, above infinity,
// are left out, as std::max over floats leaves them), and an integer
// maximum vectorises (a float one, serial, was a third of BuildScanCodes).
uint16_t MaxMagnitudeBits(const uint16_t* h, size_t n) {
  uint16_t max_bits = 0;
  size_t d = 0;
#if defined(__AVX512BW__)
  const __m512i magnitude = _mm512_set1_epi16(0x7fff), inf = _mm512_set1_epi16(0x7c00);
  __m512i m = _mm512_setzero_si512();
  for (; d + 32 <= n; d += 32) {
    const __m512i bits = _mm512_and_si512(_mm512_loadu_si512(h + d), magnitude);
    m = _mm512_max_epu16(m, _mm512_maskz_mov_epi16(_mm512_cmple_epu16_mask(bits, inf), bits));
  }
  alignas(64) uint16_t lanes[32];
  _mm512_store_si512(lanes, m);
  for (uint16_t l : lanes) max_bits = std::max(max_bits, l);
#endif
  for (; d < n; d++) {
    const uint16_t bits = h[d] & 0x7fff;
    max_bits = std::max<uint16_t>(max_bits, bits > 0x7c00 ? 0 : bits);
  }
  return max_bits;
}

// code = x / scale rounded to nearest (even), clamped to [-127, 127]; the
// vector loop gives the scalar one's codes exactly (the same IEEE
// division and rounding).
void Quantize(const float* x, size_t n, float scale, int8_t* codes) {
  size_t d = 0;
#if defined(__AVX512F__)
  const __m512 vscale = _mm512_set1_ps(scale), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (; d + 16 <= n; d += 16) {
    __m512 c = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(x + d), vscale),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    c = _mm512_min_ps(_mm512_max_ps(c, lo), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + d), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(c)));
  }
#endif
  for (; d < n; d++) codes[d] = static_cast<int8_t>(std::clamp(std::nearbyint(x[d] / scale), -127.0f, 127.0f));
}

}  // namespace

void Segment::BuildScanCodes() {
  const size_t num = vector_docs_.size();
  const size_t dim = static_cast<size_t>(dimension_);
  if (num == 0 || dim == 0) return;
  const size_t blocks = (num + kScanBlock - 1) / kScanBlock;
  const size_t stride = blocks * kScanBlock;
  codes_.reset(new int8_t[stride * dim]);  // every byte is written below
  scales_.assign(stride, 0.0f);
  std::vector<float> floats(dim);
  std::vector<int8_t> codes(dim);
  // A block's codes, dimension-major, copied into the rows a row at a
  // time: storing each vector's codes straight into the rows (a row apart,
  // more than a page) was a TLB miss a byte. Zeros for vectors without a
  // scale and for the padding after the last vector.
  std::vector<int8_t> tile(dim * kScanBlock);
  for (size_t first = 0; first < num; first += kScanBlock) {
    std::fill(tile.begin(), tile.end(), int8_t{0});
    for (size_t v = first; v < std::min(num, first + kScanBlock); v++) {
      const uint16_t* h = vectors_ + v * dim;
      const float max_abs = HalfToFloat(MaxMagnitudeBits(h, dim));
      if (max_abs == 0) continue;
      const float scale = max_abs / 127.0f;
      scales_[v] = scale;
      HalvesToFloats(h, dim, floats.data());
      Quantize(floats.data(), dim, scale, codes.data());
      for (size_t d = 0; d < dim; d++) tile[d * kScanBlock + (v - first)] = codes[d];
    }
    for (size_t d = 0; d < dim; d++) std::memcpy(&codes_[d * stride + first], &tile[d * kScanBlock], kScanBlock);
  }
}

// Exact top n by cosine, from approximate scores with error bounds: a
// vector's code dot product is within err_v = scale_v / 2 * |query|_1 (plus
// float rounding) of its true one. The n-th best lower bound seen so far
// rules out every vector whose upper bound is below it; the rest are scored
// again with their floats.
void Segment::ScanNearest(const float* query, size_t n, uint64_t max_seq,
                          std::vector<std::pair<float, uint32_t>>* best) const {
  const size_t num = vector_docs_.size();
  const size_t dim = static_cast<size_t>(dimension_);
  std::vector<uint32_t> dims;
  std::vector<float> q;
  double l1 = 0;
  for (size_t d = 0; d < dim; d++) {
    if (query[d] != 0.0f) {
      dims.push_back(static_cast<uint32_t>(d));
      q.push_back(query[d]);
      l1 += std::fabs(query[d]);
    }
  }
  const bool all_visible = vector_seqs_.empty() || vector_seqs_.back() <= max_seq;
  auto visible = [&](uint32_t v) { return all_visible || docs_[vector_docs_[v]].seq <= max_seq; };
  // Half a quantisation step per component, with room for float rounding.
  const float err_per_scale = static_cast<float>(0.5 * l1 * (1 + 1e-4));
  const float slack = 1e-5f;
  std::vector<float> lower;  // min-heap of the n best lower bounds
  lower.reserve(n + 1);
  float bound = -std::numeric_limits<float>::infinity();
  std::vector<std::pair<float, uint32_t>> candidates;  // (upper bound, vector id)
  alignas(64) float acc[kScanBlock];
  const size_t blocks = (num + kScanBlock - 1) / kScanBlock;
  const size_t stride = blocks * kScanBlock;
  for (size_t b = 0; b < blocks; b++) {
#if defined(__AVX2__) || defined(__AVX512F__)
    // Each of the query's rows is read front to back, ~30 streams at once:
    // asking for the line kPrefetchBlocks ahead in each keeps more of them
    // in flight than the hardware prefetchers do alone. kvbench search at
    // 1M docs, 300 queries: 6.7-6.9 -> 5.3-5.5 ms of scan CPU a query
    // (perf samples); a synthetic scan was slower 4 blocks ahead than with
    // no prefetch at all, faster 8 and 16 ahead.
    constexpr size_t kPrefetchBlocks = 8;
    if (b + kPrefetchBlocks < blocks) {
      const int8_t* ahead = codes_.get() + (b + kPrefetchBlocks) * kScanBlock;
      for (uint32_t d : dims) _mm_prefetch(reinterpret_cast<const char*>(ahead + size_t{d} * stride), _MM_HINT_T0);
    }
#endif
    ScanBlock(codes_.get() + b * kScanBlock, stride, dims.data(), q.data(), dims.size(), acc);
    const size_t count = std::min(kScanBlock, num - b * kScanBlock);
    for (size_t j = 0; j < count; j++) {
      const uint32_t v = static_cast<uint32_t>(b * kScanBlock + j);
      const float scale = scales_[v];
      const float approx = acc[j] * scale;
      const float err = scale * err_per_scale + slack;
      const float upper = approx + err;
      if (upper < bound) continue;
      if (!visible(v)) continue;
      candidates.emplace_back(upper, v);
      const float low = approx - err;
      if (lower.size() < n) {
        lower.push_back(low);
        std::push_heap(lower.begin(), lower.end(), std::greater<>());
      } else if (low > lower.front()) {
        std::pop_heap(lower.begin(), lower.end(), std::greater<>());
        lower.back() = low;
        std::push_heap(lower.begin(), lower.end(), std::greater<>());
      }
      if (lower.size() == n) bound = lower.front();
    }
  }
  best->clear();
  for (const auto& [upper, v] : candidates) {
    if (upper < bound) continue;
    best->emplace_back(DotProductHalf(vectors_ + size_t{v} * dim, query, dim), v);
  }
  const size_t k = std::min(n, best->size());
  std::partial_sort(best->begin(), best->begin() + static_cast<ptrdiff_t>(k), best->end(),
                    [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  best->resize(k);
}

void Segment::NearestVectors(const float* query, int dimension, size_t n, uint64_t max_seq,
                             std::vector<Candidate>* out) const {
  if (n == 0 || dimension != dimension_ || vector_docs_.empty()) return;
  std::vector<std::pair<float, uint32_t>> best;  // (cosine, vector id)
  if (hnsw_) {
    // Ask for enough extra to make up for docs newer than the snapshot.
    const size_t newer = static_cast<size_t>(vector_seqs_.end() -
                                             std::upper_bound(vector_seqs_.begin(), vector_seqs_.end(), max_seq));
    const size_t k = std::min(vector_docs_.size(), n + newer);
    try {
      auto queue = hnsw_->index->searchKnn(query, k);
      while (!queue.empty()) {
        best.emplace_back(1.0f - queue.top().first, static_cast<uint32_t>(queue.top().second));
        queue.pop();
      }
    } catch (const std::exception&) {
      best.clear();  // hnswlib found the graph inconsistent: answer nothing rather than fail
    }
    std::reverse(best.begin(), best.end());
  } else {
    ScanNearest(query, n, max_seq, &best);
  }
  size_t added = 0;
  for (const auto& [score, v] : best) {
    if (v >= vector_docs_.size()) continue;
    const Doc& d = docs_[vector_docs_[v]];
    if (d.seq > max_seq) continue;
    out->push_back(Candidate{std::string(d.key), d.seq, score});
    if (++added == n) break;
  }
}

}  // namespace kvstore::index
