#include "index/embedder.h"

#include <cmath>
#include <algorithm>

#include "engine/coding/checksum.h"
#include "index/analyzer.h"

namespace kvstore {

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
  void EmbedOne(std::string_view text, std::vector<float>* out) const {
    std::vector<std::string> tokens;
    analyzer_->Tokenize(text, &tokens);
    // (feature hash, kind weight); sorted below so equal features are
    // adjacent and their count is the term frequency.
    std::vector<std::pair<uint64_t, double>> features;
    features.reserve(tokens.size() * 8);
    auto add = [&](std::string_view feature, uint64_t seed, double weight) {
      features.emplace_back(Checksum64(feature, seed), weight);
    };
    std::string scratch;
    std::vector<size_t> starts;  // byte offset of each code point of scratch
    for (size_t i = 0; i < tokens.size(); i++) {
      const std::string& t = tokens[i];
      add(t, kUnigramSeed, kUnigramWeight);
      if (i + 1 < tokens.size()) {
        scratch.clear();
        scratch.append(t);
        scratch.push_back(' ');
        scratch.append(tokens[i + 1]);
        add(scratch, kBigramSeed, kBigramWeight);
      }
      // Trigrams of code points of "^token$".
      scratch.clear();
      scratch.push_back('^');
      scratch.append(t);
      scratch.push_back('$');
      starts.clear();
      for (size_t b = 0; b < scratch.size(); b++) {
        if ((static_cast<unsigned char>(scratch[b]) & 0xC0) != 0x80) starts.push_back(b);
      }
      starts.push_back(scratch.size());
      for (size_t c = 0; c + 3 < starts.size(); c++) {
        add(std::string_view(scratch).substr(starts[c], starts[c + 3] - starts[c]), kTrigramSeed,
            kTrigramWeight);
      }
    }
    out->assign(static_cast<size_t>(dimension_), 0.0f);
    std::vector<double> acc(static_cast<size_t>(dimension_), 0.0);
    std::sort(features.begin(), features.end());
    for (size_t i = 0; i < features.size();) {
      size_t j = i + 1;
      while (j < features.size() && features[j].first == features[i].first) j++;
      const uint64_t h = features[i].first;
      const size_t bucket = static_cast<size_t>(h % static_cast<uint64_t>(dimension_));
      const double sign = (h >> 63) ? -1.0 : 1.0;
      acc[bucket] += sign * features[i].second * (1.0 + std::log(static_cast<double>(j - i)));
      i = j;
    }
    double norm = 0;
    for (double v : acc) norm += v * v;
    if (norm <= 0) return;
    norm = std::sqrt(norm);
    for (size_t i = 0; i < acc.size(); i++) (*out)[i] = static_cast<float>(acc[i] / norm);
  }

  int dimension_;
  std::unique_ptr<index::Analyzer> analyzer_;
};

}  // namespace

std::shared_ptr<Embedder> NewHashingEmbedder(int dimension) {
  return std::make_shared<HashingEmbedder>(dimension);
}

}  // namespace kvstore
