#include "index/embedder.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>

#include "engine/coding/checksum.h"
#include "index/analyzer.h"

namespace kvstore {

namespace index {

namespace {

// Words carry the meaning; bigrams add a little word order; trigrams catch
// shared stems and typos but are many per word, so they weigh less each.
constexpr double kUnigramWeight = 1.0;
constexpr double kBigramWeight = 0.6;
constexpr double kTrigramWeight = 0.35;
// A seed per feature kind, so "ab" the word and "ab" the trigram differ.
constexpr uint64_t kUnigramSeed = 0x756e69;
static_assert(kUnigramSeed == kTokenHashSeed, "a word's unigram hash is its TokenHash");
constexpr uint64_t kBigramSeed = 0x6269;
constexpr uint64_t kTrigramSeed = 0x747269;
constexpr size_t kFirstTableSlots = 256;

// wyhash's multiply-fold: a full 64x64 -> 128 bit product folded to 64.
inline uint64_t Fold(uint64_t a, uint64_t b) {
  const __uint128_t m = static_cast<__uint128_t>(a) * b;
  return static_cast<uint64_t>(m) ^ static_cast<uint64_t>(m >> 64);
}

// A hash of n <= 12 bytes at p (a trigram of code points), where 16 bytes
// from p may be read: two fixed-size loads, masked, rather than a memcpy
// call of n bytes (whose store-to-load stall was a third of the time).
inline uint64_t SmallHash(const char* p, size_t n, uint64_t seed) {
  uint64_t lo, hi;
  std::memcpy(&lo, p, 8);
  std::memcpy(&hi, p + 8, 8);
  lo &= n >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * n)) - 1;
  hi &= n <= 8 ? 0 : (uint64_t{1} << (8 * (n - 8))) - 1;
  return Fold(lo ^ seed ^ 0xa0761d6478bd642full, hi ^ (static_cast<uint64_t>(n) << 56) ^ 0xe7037ed1a0b428dbull);
}

}  // namespace

std::atomic<bool> g_sketch_general_path_for_test{false};

// Distinct words and distinct bigrams are counted first, in open-addressing
// tables keyed by their hash, one of each per thread and reused (embedding
// allocates nothing once they are grown). Only then is each distinct
// word's unigram and trigrams, and each distinct bigram, added to the
// vector once, weighted by its count: a word repeated in a text costs one
// table probe per repetition, not a probe per trigram (v2 counted every
// feature, and its table's probes were most of the cost). Entries are kept
// in first-seen order, which is the order the vector is summed in.
struct HashingSketch::Scratch {
  struct Entry {
    uint64_t hash;
    uint32_t count;
    uint32_t offset;  // words: where its bytes are in `bytes`
    uint32_t size;
  };
  struct Table {
    std::vector<uint32_t> slots = std::vector<uint32_t>(kFirstTableSlots, 0);  // entry index + 1; 0: empty
    std::vector<Entry> entries;
    // The entry for hash, new (count 0) when absent.
    Entry& Find(uint64_t hash) {
      if (2 * (entries.size() + 1) > slots.size()) Grow();
      const size_t mask = slots.size() - 1;
      for (size_t i = static_cast<size_t>(hash ^ (hash >> 32)) & mask;; i = (i + 1) & mask) {
        const uint32_t slot = slots[i];
        if (slot == 0) {
          entries.push_back(Entry{hash, 0, 0, 0});
          slots[i] = static_cast<uint32_t>(entries.size());
          return entries.back();
        }
        if (entries[slot - 1].hash == hash) return entries[slot - 1];
      }
    }
    void Grow() {
      slots.assign(slots.size() * 2, 0);
      const size_t mask = slots.size() - 1;
      for (size_t e = 0; e < entries.size(); e++) {
        const uint64_t h = entries[e].hash;
        size_t i = static_cast<size_t>(h ^ (h >> 32)) & mask;
        while (slots[i] != 0) i = (i + 1) & mask;
        slots[i] = static_cast<uint32_t>(e + 1);
      }
    }
    void Clear() {
      if (slots.size() > 16 * kFirstTableSlots) {
        // Grown by a huge text: do not make every later text clear it all.
        slots.assign(kFirstTableSlots, 0);
        entries = std::vector<Entry>();
      } else {
        std::fill(slots.begin(), slots.end(), 0);  // a few KiB: cheaper than finding each entry
        entries.clear();
      }
    }
  };
  Table words, bigrams;
  std::string bytes;  // the distinct words, back to back
  std::vector<double> acc;
};

HashingSketch::HashingSketch()
    : s_([]() -> Scratch& {
        static thread_local Scratch scratch;
        return scratch;
      }()) {}

void HashingSketch::Add(std::string_view t, uint64_t h) {
  if (t.empty() || t.size() > kMaxTokenBytes) return;  // an analyzer never emits these
  Scratch::Entry& w = s_.words.Find(h);
  if (w.count++ == 0) {
    w.offset = static_cast<uint32_t>(s_.bytes.size());
    w.size = static_cast<uint32_t>(t.size());
    s_.bytes.append(t);
  }
  if (have_prev_) s_.bigrams.Find(Fold(prev_hash_ ^ kBigramSeed, h ^ 0x8ebc6af09c88c6e3ull)).count++;
  prev_hash_ = h;
  have_prev_ = true;
}

void HashingSketch::Finish(int dimension, std::vector<float>* out) {
  // 1 + ln(count) for the small counts that make up nearly all features.
  static const std::array<double, 64> kLogTf = [] {
    std::array<double, 64> t{};
    for (size_t i = 1; i < t.size(); i++) t[i] = 1.0 + std::log(static_cast<double>(i));
    return t;
  }();
  auto log_tf = [](uint32_t c) { return c < kLogTf.size() ? kLogTf[c] : 1.0 + std::log(static_cast<double>(c)); };
  const uint64_t dim = static_cast<uint64_t>(dimension);
  Scratch& s = s_;
  s.acc.assign(dim, 0.0);
  double* acc = s.acc.data();
  // The sign from the top bit, the bucket from the other 63 by a multiply
  // (v2's h % dim was a 64-bit division per feature, half of all the time).
  // The sign goes into w's sign bit, exactly what negating it does: as a
  // branch on a hash bit it was mispredicted half the time, the largest
  // cost of this loop.
  auto add = [acc, dim](uint64_t h, double w) {
    const auto bucket = static_cast<size_t>((static_cast<__uint128_t>(h << 1) * dim) >> 64);
    acc[bucket] += std::bit_cast<double>(std::bit_cast<uint64_t>(w) ^ (h & (uint64_t{1} << 63)));
  };
  // "^word$", with room for SmallHash's 16-byte reads past its last trigram.
  char marked[kMaxTokenBytes + 2 + 16] = {};
  size_t starts[kMaxTokenBytes + 3];  // byte offset of each code point of marked
  // Room for 16-byte reads from any word's start (the fast path below).
  s.bytes.append(16, '\0');
  const bool fast = !g_sketch_general_path_for_test.load(std::memory_order_relaxed);
  for (const Scratch::Entry& e : s.words.entries) {
    const double tf = log_tf(e.count);
    add(e.hash, kUnigramWeight * tf);
    const double tw = kTrigramWeight * tf;
    if (fast && e.size <= 14) {
      // Most words are ASCII and short: "^word$" fits in 16 bytes, each
      // code point is a byte, and every trigram is 3 bytes that SmallHash
      // would hash as (lo = those bytes, hi = 0). Taken from a register
      // rather than from `marked`, whose fresh byte stores its 8-byte loads
      // could not forward from (stalls that were most of this loop), and
      // with no code point scan. Same hashes in the same order: the same
      // vector, bit for bit (HashingEmbedderTest.FastTrigramsAreBitForBit).
      uint64_t lo, hi;
      std::memcpy(&lo, s.bytes.data() + e.offset, 8);
      std::memcpy(&hi, s.bytes.data() + e.offset + 8, 8);
      __uint128_t word = (static_cast<__uint128_t>(hi) << 64) | lo;
      word &= (static_cast<__uint128_t>(1) << (8 * e.size)) - 1;
      if ((static_cast<uint64_t>(word) & 0x8080808080808080ull) == 0 &&
          (static_cast<uint64_t>(word >> 64) & 0x8080808080808080ull) == 0) {
        const __uint128_t m = '^' | (word << 8) | (static_cast<__uint128_t>('$') << (8 * (e.size + 1)));
        constexpr uint64_t kHi = (uint64_t{3} << 56) ^ 0xe7037ed1a0b428dbull;  // SmallHash's hi for n = 3
        for (size_t c = 0; c < e.size; c++) {
          const uint64_t t = static_cast<uint64_t>(m >> (8 * c)) & 0xffffff;
          add(Fold(t ^ kTrigramSeed ^ 0xa0761d6478bd642full, kHi), tw);
        }
        continue;
      }
    }
    // Trigrams of code points of "^word$".
    marked[0] = '^';
    std::memcpy(marked + 1, s.bytes.data() + e.offset, e.size);
    marked[e.size + 1] = '$';
    const size_t len = e.size + 2;
    size_t n = 0;
    for (size_t b = 0; b < len; b++) {
      if ((static_cast<unsigned char>(marked[b]) & 0xC0) != 0x80) starts[n++] = b;
    }
    starts[n] = len;
    for (size_t c = 0; c + 3 <= n; c++) add(SmallHash(marked + starts[c], starts[c + 3] - starts[c], kTrigramSeed), tw);
  }
  for (const Scratch::Entry& e : s.bigrams.entries) add(e.hash, kBigramWeight * log_tf(e.count));
  s.words.Clear();
  s.bigrams.Clear();
  if (s.bytes.capacity() > (1 << 20)) {
    s.bytes = std::string();
  } else {
    s.bytes.clear();
  }
  have_prev_ = false;
  out->assign(dim, 0.0f);
  double norm = 0;
  for (double v : s.acc) norm += v * v;
  if (norm <= 0) return;
  const double inv = 1.0 / std::sqrt(norm);
  for (size_t i = 0; i < dim; i++) (*out)[i] = static_cast<float>(s.acc[i] * inv);
}

}  // namespace index

namespace {

class HashingEmbedder final : public Embedder {
 public:
  explicit HashingEmbedder(int dimension) : dimension_(dimension < 8 ? 8 : dimension) {
    index::AnalyzerOptions options;
    options.stemmer_language.clear();  // trigrams do the stemming's job, language-neutrally
    options.stop_words = false;
    std::unique_ptr<index::Analyzer> analyzer;
    Status s = index::Analyzer::Create(options, &analyzer);  // cannot fail without a stemmer
    (void)s;
    analyzer_ = std::move(analyzer);
  }

  int dimension() const override { return dimension_; }
  std::string name() const override { return index::kHashingEmbedderName; }

  Status Embed(const std::vector<std::string_view>& texts, std::vector<std::vector<float>>* vectors) override {
    vectors->clear();
    vectors->reserve(texts.size());
    for (std::string_view text : texts) {
      vectors->emplace_back();
      index::HashingSketch sketch;
      analyzer_->ForEachToken(text, [&](std::string_view t) { sketch.Add(t); });
      sketch.Finish(dimension_, &vectors->back());
    }
    return Status::OK();
  }

 private:
  int dimension_;
  std::unique_ptr<index::Analyzer> analyzer_;
};

}  // namespace

namespace index {

int HashingEmbedderDimension(const Embedder* embedder) {
  const auto* hashing = dynamic_cast<const HashingEmbedder*>(embedder);
  return hashing != nullptr ? hashing->dimension() : 0;
}

}  // namespace index

std::shared_ptr<Embedder> NewHashingEmbedder(int dimension) {
  return std::make_shared<HashingEmbedder>(dimension);
}

}  // namespace kvstore
