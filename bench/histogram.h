// Histogram: per-operation latencies in nanoseconds, in log-linear buckets
// (HdrHistogram-like): exact below 128 ns, then 64 linear sub-buckets per
// power of two, so any percentile is within 1/64 (1.6%) of the true value.
// Fixed size (about 30 KB), no allocation while recording.
//
// Thread safety: none; give each thread its own and Merge them afterwards.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace kvbench {

class Histogram {
 public:
  void Record(uint64_t nanos) {
    counts_[BucketOf(nanos)]++;
    count_++;
    sum_ += nanos;
    if (nanos < min_) min_ = nanos;
    if (nanos > max_) max_ = nanos;
  }

  void Merge(const Histogram& other);

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / count_; }

  // The value below which a fraction p (0..1) of the recordings fall, in
  // nanoseconds: the midpoint of the bucket holding that rank, clamped to
  // [min, max]. 0 when empty.
  double Percentile(double p) const;

 private:
  static constexpr int kSubBits = 6;                  // 64 sub-buckets per power of two
  static constexpr uint64_t kLinear = 2u << kSubBits;  // values below 128 are exact
  static constexpr int kBuckets = kLinear + (64 - kSubBits - 1) * (1 << kSubBits);

  static int BucketOf(uint64_t v) {
    if (v < kLinear) return static_cast<int>(v);
    int msb = 63 - std::countl_zero(v);  // >= kSubBits + 1
    int shift = msb - kSubBits;          // v >> shift is in [64, 128)
    return static_cast<int>(kLinear + (shift - 1) * (1 << kSubBits) +
                            ((v >> shift) - (uint64_t{1} << kSubBits)));
  }
  // The smallest value in bucket b, and the width of b.
  static void BucketRange(int b, uint64_t* low, uint64_t* width);

  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace kvbench
