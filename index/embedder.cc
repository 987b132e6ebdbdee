#include "index/embedder.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "engine/coding/checksum.h"
#include "index/analyzer.h"

namespace kvstore {

namespace {

using index::kMaxTokenBytes;

// Words carry the meaning; bigrams add a little word order; trigrams catch
// shared stems and typos but are many per word, so they weigh less each.
constexpr double kUnigramWeight = 1.0;
constexpr double kBigramWeight = 0.6;
constexpr double kTrigramWeight = 0.35;
// A seed per feature kind, so "ab" the word and "ab" the trigram differ.
constexpr uint64_t kUnigramSeed = 0x756e69;
constexpr uint64_t kBigramSeed = 0x6269;
constexpr uint64_t kTrigramSeed = 0x747269;

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
      EmbedOne(text, &vectors->back());
    }
    return Status::OK();
  }

 private:
  // Features are counted in an open-addressing table keyed by their hash
  // (sorting them, as v1 did, cost more than everything else together);
  // one per thread, reused, so that embedding allocates nothing.
  struct Slot {
    uint64_t hash;
    uint32_t count;  // 0: empty
    uint32_t kind;   // index into kWeights
  };
  struct Scratch {
    std::vector<Slot> table = std::vector<Slot>(1024, Slot{0, 0, 0});
    size_t used = 0;
    std::vector<double> acc;
  };

  static void Count(Scratch& s, uint64_t hash, uint32_t kind) {
    for (;;) {
      const size_t mask = s.table.size() - 1;
      for (size_t i = static_cast<size_t>(hash ^ (hash >> 29)) & mask;; i = (i + 1) & mask) {
        Slot& slot = s.table[i];
        if (slot.count == 0) {
          if (2 * (s.used + 1) > s.table.size()) break;  // grow first
          slot = Slot{hash, 1, kind};
          s.used++;
          return;
        }
        if (slot.hash == hash) {
          slot.count++;
          return;
        }
      }
      std::vector<Slot> old(s.table.size() * 2, Slot{0, 0, 0});
      old.swap(s.table);
      const size_t mask2 = s.table.size() - 1;
      for (const Slot& o : old) {
        if (o.count == 0) continue;
        size_t i = static_cast<size_t>(o.hash ^ (o.hash >> 29)) & mask2;
        while (s.table[i].count != 0) i = (i + 1) & mask2;
        s.table[i] = o;
      }
    }
  }

  void EmbedOne(std::string_view text, std::vector<float>* out) const {
    static thread_local Scratch scratch;
    Scratch& s = scratch;
    // The previous token, for bigrams, and "^token$", for trigrams.
    char prev[kMaxTokenBytes];
    size_t prev_len = 0;
    bool have_prev = false;
    char pair[2 * kMaxTokenBytes + 1];
    char marked[kMaxTokenBytes + 2];
    size_t starts[kMaxTokenBytes + 3];  // byte offset of each code point of marked
    analyzer_->ForEachToken(text, [&](std::string_view t) {
      Count(s, Checksum64(t, kUnigramSeed), 0);
      if (have_prev) {
        std::memcpy(pair, prev, prev_len);
        pair[prev_len] = ' ';
        std::memcpy(pair + prev_len + 1, t.data(), t.size());
        Count(s, Checksum64(std::string_view(pair, prev_len + 1 + t.size()), kBigramSeed), 1);
      }
      std::memcpy(prev, t.data(), t.size());
      prev_len = t.size();
      have_prev = true;
      // Trigrams of code points of "^token$".
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
        Count(s, Checksum64(std::string_view(marked + starts[c], starts[c + 3] - starts[c]), kTrigramSeed), 2);
      }
    });
    static constexpr double kWeights[3] = {kUnigramWeight, kBigramWeight, kTrigramWeight};
    // 1 + ln(tf) for the small tfs that make up nearly all features.
    static const std::array<double, 64> kLogTf = [] {
      std::array<double, 64> t{};
      for (size_t i = 1; i < t.size(); i++) t[i] = 1.0 + std::log(static_cast<double>(i));
      return t;
    }();
    const size_t dim = static_cast<size_t>(dimension_);
    s.acc.assign(dim, 0.0);
    for (Slot& slot : s.table) {
      if (slot.count == 0) continue;
      const uint64_t h = slot.hash;
      const size_t bucket = static_cast<size_t>(h % static_cast<uint64_t>(dimension_));
      const double tf = slot.count < kLogTf.size() ? kLogTf[slot.count] : 1.0 + std::log(static_cast<double>(slot.count));
      const double w = kWeights[slot.kind] * tf;
      s.acc[bucket] += (h >> 63) ? -w : w;
      slot.count = 0;
    }
    s.used = 0;
    out->assign(dim, 0.0f);
    double norm = 0;
    for (double v : s.acc) norm += v * v;
    if (norm <= 0) return;
    const double inv = 1.0 / std::sqrt(norm);
    for (size_t i = 0; i < dim; i++) (*out)[i] = static_cast<float>(s.acc[i] * inv);
  }

  int dimension_;
  std::unique_ptr<index::Analyzer> analyzer_;
};

}  // namespace

std::shared_ptr<Embedder> NewHashingEmbedder(int dimension) {
  return std::make_shared<HashingEmbedder>(dimension);
}

}  // namespace kvstore
