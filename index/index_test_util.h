// Random documents and a brute-force reference index for the index tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "index/segment.h"

namespace kvstore::index::testutil {

inline const std::vector<std::string>& Vocabulary() {
  static const std::vector<std::string> words = [] {
    std::vector<std::string> w = {"apple", "banana", "cherry", "search", "index", "engine", "storage", "vector",
                                  "running", "runner", "ran", "café", "東京", "data", "base", "log", "tree",
                                  "merge", "compaction", "flush"};
    for (int i = 0; i < 180; i++) w.push_back("w" + std::to_string(i * 37 % 1000));
    return w;
  }();
  return words;
}

// Zipf-ish: low indexes are much more common.
inline std::string RandomText(std::mt19937_64& rng, int max_words) {
  const auto& vocab = Vocabulary();
  int n = static_cast<int>(rng() % (max_words + 1));
  std::string text;
  for (int i = 0; i < n; i++) {
    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    size_t idx = static_cast<size_t>(std::pow(u, 2.5) * vocab.size());
    if (i > 0) text += (rng() % 5 == 0) ? ", " : " ";
    text += vocab[std::min(idx, vocab.size() - 1)];
  }
  return text;
}

inline std::string RandomValue(std::mt19937_64& rng) {
  switch (rng() % 4) {
    case 0:
      return "\"" + RandomText(rng, 12) + "\"";
    case 1:
      return "{\"title\":\"" + RandomText(rng, 4) + "\",\"body\":[\"" + RandomText(rng, 10) + "\"],\"n\":3}";
    case 2:
      return std::to_string(rng() % 20);  // few distinct: exact matches
    default:
      return RandomText(rng, 15);
  }
}

struct Ref {
  std::vector<AnalyzedDoc> docs;

  uint64_t DocCount() const {
    uint64_t n = 0;
    for (const auto& d : docs) n += d.length > 0;
    return n;
  }
  uint64_t TotalLength() const {
    uint64_t n = 0;
    for (const auto& d : docs) n += d.length;
    return n;
  }
  uint64_t DocFrequency(const std::string& term) const {
    uint64_t n = 0;
    for (const auto& d : docs) {
      for (const auto& [t, tf] : d.terms) n += t == term;
    }
    return n;
  }
  // Same formula and summation order as the sources.
  static bool Score(const AnalyzedDoc& d, const std::vector<std::string>& terms, const std::vector<double>& idf,
                    double avgdl, bool match_all, double* score) {
    *score = 0;
    size_t matched = 0;
    for (size_t i = 0; i < terms.size(); i++) {
      for (const auto& [t, tf] : d.terms) {
        if (t != terms[i]) continue;
        matched++;
        const double norm = kBM25K1 * (1 - kBM25B + kBM25B * d.length / avgdl);
        *score += idf[i] * tf * (kBM25K1 + 1) / (tf + norm);
      }
    }
    return match_all ? matched == terms.size() : matched > 0;
  }
};

inline double Dot(const std::vector<float>& a, const float* b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); i++) d += a[i] * b[i];
  return d;
}

using Version = std::tuple<std::string, uint64_t>;
inline std::set<Version> Versions(const std::vector<Candidate>& c) {
  std::set<Version> s;
  for (const auto& x : c) s.emplace(x.key, x.seq);
  return s;
}

}  // namespace kvstore::index::testutil
