#include "index/embedder.h"

#include <algorithm>
#include <array>
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
constexpr uint64_t kBigramSeed = 0x6269;
constexpr uint64_t kTrigramSeed = 0x747269;
constexpr size_t kFirstTableSlots = 1024;

}  // namespace

// Features are counted in an open-addressing table keyed by their hash
// (sorting them, as v1 did, cost more than everything else together); one
// per thread, reused, so that embedding allocates nothing. A bitmap of the
// used slots lets Finish visit only those, still in slot order, which is
// the order the vector is summed in (the order fixes the last bits).
struct HashingSketch::Scratch {
  struct Slot {
    uint64_t hash;
    uint32_t count;  // 0: empty
    uint32_t kind;   // index into the weights
  };
  std::vector<Slot> table = std::vector<Slot>(kFirstTableSlots, Slot{0, 0, 0});
  std::vector<uint64_t> used_bits = std::vector<uint64_t>(kFirstTableSlots / 64, 0);
  size_t used = 0;
  std::vector<double> acc;

  static size_t Home(uint64_t hash, size_t mask) { return static_cast<size_t>(hash ^ (hash >> 29)) & mask; }

  void Count(uint64_t hash, uint32_t kind) {
    for (;;) {
      const size_t mask = table.size() - 1;
      for (size_t i = Home(hash, mask);; i = (i + 1) & mask) {
        Slot& slot = table[i];
        if (slot.count == 0) {
          if (2 * (used + 1) > table.size()) break;  // grow first
          slot = Slot{hash, 1, kind};
          used_bits[i >> 6] |= uint64_t{1} << (i & 63);
          used++;
          return;
        }
        if (slot.hash == hash) {
          slot.count++;
          return;
        }
      }
      Grow();
    }
  }

  // Doubles the table, re-inserting in the old slot order (as v2 did).
  void Grow() {
    std::vector<Slot> old(table.size() * 2, Slot{0, 0, 0});
    old.swap(table);
    used_bits.assign(table.size() / 64, 0);
    const size_t mask = table.size() - 1;
    for (const Slot& o : old) {
      if (o.count == 0) continue;
      size_t i = Home(o.hash, mask);
      while (table[i].count != 0) i = (i + 1) & mask;
      table[i] = o;
      used_bits[i >> 6] |= uint64_t{1} << (i & 63);
    }
  }
};

HashingSketch::HashingSketch()
    : s_([]() -> Scratch& {
        static thread_local Scratch scratch;
        return scratch;
      }()) {}

void HashingSketch::Add(std::string_view t) {
  if (t.empty() || t.size() > kMaxTokenBytes) return;  // an analyzer never emits these
  s_.Count(Checksum64(t, kUnigramSeed), 0);
  if (have_prev_) {
    char pair[2 * kMaxTokenBytes + 1];
    std::memcpy(pair, prev_, prev_len_);
    pair[prev_len_] = ' ';
    std::memcpy(pair + prev_len_ + 1, t.data(), t.size());
    s_.Count(Checksum64(std::string_view(pair, prev_len_ + 1 + t.size()), kBigramSeed), 1);
  }
  std::memcpy(prev_, t.data(), t.size());
  prev_len_ = t.size();
  have_prev_ = true;
  // Trigrams of code points of "^word$".
  char marked[kMaxTokenBytes + 2];
  size_t starts[kMaxTokenBytes + 3];  // byte offset of each code point of marked
  marked[0] = '^';
  std::memcpy(marked + 1, t.data(), t.size());
  marked[t.size() + 1] = '$';
  const size_t len = t.size() + 2;
  size_t n = 0;
  for (size_t b = 0; b < len; b++) {
    if ((static_cast<unsigned char>(marked[b]) & 0xC0) != 0x80) starts[n++] = b;
  }
  starts[n] = len;
  for (size_t c = 0; c + 3 <= n; c++) {
    s_.Count(Checksum64(std::string_view(marked + starts[c], starts[c + 3] - starts[c]), kTrigramSeed), 2);
  }
}

void HashingSketch::Finish(int dimension, std::vector<float>* out) {
  static constexpr double kWeights[3] = {kUnigramWeight, kBigramWeight, kTrigramWeight};
  // 1 + ln(tf) for the small tfs that make up nearly all features.
  static const std::array<double, 64> kLogTf = [] {
    std::array<double, 64> t{};
    for (size_t i = 1; i < t.size(); i++) t[i] = 1.0 + std::log(static_cast<double>(i));
    return t;
  }();
  const size_t dim = static_cast<size_t>(dimension);
  Scratch& s = s_;
  s.acc.assign(dim, 0.0);
  for (size_t w = 0; w < s.used_bits.size(); w++) {
    for (uint64_t bits = s.used_bits[w]; bits != 0; bits &= bits - 1) {
      Scratch::Slot& slot = s.table[w * 64 + static_cast<size_t>(__builtin_ctzll(bits))];
      const uint64_t h = slot.hash;
      const size_t bucket = static_cast<size_t>(h % static_cast<uint64_t>(dimension));
      const double tf =
          slot.count < kLogTf.size() ? kLogTf[slot.count] : 1.0 + std::log(static_cast<double>(slot.count));
      const double wt = kWeights[slot.kind] * tf;
      s.acc[bucket] += (h >> 63) ? -wt : wt;
      slot.count = 0;
    }
    s.used_bits[w] = 0;
  }
  s.used = 0;
  have_prev_ = false;
  prev_len_ = 0;
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
