#include "bench/histogram.h"

#include <algorithm>
#include <cmath>

namespace kvbench {

void Histogram::Merge(const Histogram& other) {
  for (int b = 0; b < kBuckets; b++) counts_[b] += other.counts_[b];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

void Histogram::BucketRange(int b, uint64_t* low, uint64_t* width) {
  if (b < static_cast<int>(kLinear)) {
    *low = static_cast<uint64_t>(b);
    *width = 1;
    return;
  }
  int rel = b - static_cast<int>(kLinear);
  int shift = rel / (1 << kSubBits) + 1;
  uint64_t sub = static_cast<uint64_t>(rel % (1 << kSubBits)) + (uint64_t{1} << kSubBits);
  *low = sub << shift;
  *width = uint64_t{1} << shift;
}

double Histogram::Percentile(double p) const {
  if (count_ == 0) return 0.0;
  p = std::clamp(p, 0.0, 1.0);
  // The rank (1-based) of the wanted recording.
  uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(p * count_)));
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; b++) {
    seen += counts_[b];
    if (seen >= rank) {
      uint64_t low, width;
      BucketRange(b, &low, &width);
      double mid = static_cast<double>(low) + static_cast<double>(width - 1) / 2.0;
      return std::clamp(mid, static_cast<double>(min_), static_cast<double>(max_));
    }
  }
  return static_cast<double>(max_);
}

}  // namespace kvbench
