// A fixed-size log-linear histogram of nanosecond values, so that a sampler
// running for a VM's whole life keeps percentiles in constant memory.
#pragma once

#include <array>
#include <cstdint>

namespace pl::latency {

/// Values below 64 ns are exact; above, each power of two is split into 32
/// buckets, so a percentile is off by at most 1/32 (3.1%) of its value. The
/// maximum is kept exactly. Covers up to 2^42 ns (73 min); larger values land
/// in the last bucket. No allocation: 1184 counters inline.
class Histogram {
 public:
  void add(uint64_t ns);
  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  uint32_t bucket_count(int bucket) const { return counts_[bucket]; }
  /// The value at quantile q in [0, 1] (0.5 = median): the upper edge of the
  /// bucket holding that rank, clamped to the maximum. 0 when empty.
  uint64_t quantile(double q) const;

  static constexpr int kExact = 64;
  static constexpr int kSubBits = 5;
  static constexpr int kTopExponent = 42;
  static constexpr int kBuckets = kExact + (kTopExponent - 6) * (1 << kSubBits);

  /// Adds `n` values to `bucket` at once, e.g. counts kept by the BPF
  /// source's kernel side, which buckets alike (bpf/latency.bpf.c).
  /// `max` is the largest value added, kept exactly.
  void add_bucket(int bucket, uint64_t n, uint64_t max);

  static int bucket_of(uint64_t ns);
  static uint64_t upper_edge(int bucket);  ///< the largest value in the bucket

 private:
  std::array<uint32_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t max_ = 0;
};

}  // namespace pl::latency
