// LatencyStats: a sample of durations with mean and percentiles, for the
// load generator's report and mod-bench's step times.
//
// Thread-safety: a plain value; merge per-thread samples before reading.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace modserve {

class LatencyStats {
 public:
  void Add(double seconds) { samples_.push_back(seconds); }
  void Merge(const LatencyStats& o) { samples_.insert(samples_.end(), o.samples_.begin(), o.samples_.end()); }
  size_t count() const { return samples_.size(); }
  double Mean() const {
    if (samples_.empty()) return 0;
    double s = 0;
    for (double v : samples_) s += v;
    return s / static_cast<double>(samples_.size());
  }
  // Nearest-rank percentile, p in [0, 100].
  double Percentile(double p) {
    if (samples_.empty()) return 0;
    std::sort(samples_.begin(), samples_.end());
    const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(samples_.size())));
    return samples_[std::min(samples_.size() - 1, rank == 0 ? 0 : rank - 1)];
  }

 private:
  std::vector<double> samples_;
};

}  // namespace modserve
