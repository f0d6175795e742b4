#include "latency/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace pl::latency {

int Histogram::bucket_of(uint64_t ns) {
  if (ns < kExact) return static_cast<int>(ns);
  int e = std::bit_width(ns) - 1;  // 2^e <= ns < 2^(e+1), e >= 6
  if (e >= kTopExponent) return kBuckets - 1;
  int sub = static_cast<int>((ns >> (e - kSubBits)) & ((1 << kSubBits) - 1));
  return kExact + (e - 6) * (1 << kSubBits) + sub;
}

uint64_t Histogram::upper_edge(int bucket) {
  if (bucket < kExact) return static_cast<uint64_t>(bucket);
  int e = (bucket - kExact) / (1 << kSubBits) + 6;
  int sub = (bucket - kExact) % (1 << kSubBits);
  uint64_t width = uint64_t{1} << (e - kSubBits);
  return (uint64_t{1} << e) + (static_cast<uint64_t>(sub) + 1) * width - 1;
}

void Histogram::add(uint64_t ns) {
  ++counts_[bucket_of(ns)];
  ++count_;
  max_ = std::max(max_, ns);
}

void Histogram::add_bucket(int bucket, uint64_t n, uint64_t max) {
  if (bucket < 0 || bucket >= kBuckets || n == 0) return;
  counts_[bucket] += static_cast<uint32_t>(n);
  count_ += n;
  max_ = std::max(max_, max);
}

uint64_t Histogram::quantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * count_)));
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += counts_[b];
    if (seen >= rank) return std::min(upper_edge(b), max_);
  }
  return max_;
}

}  // namespace pl::latency
