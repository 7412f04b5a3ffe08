// Learning-rate schedule: linear warm-up to `peak`, then cosine decay to
// `peak * min_ratio` at `total` steps (and flat after).
//
// Thread-safety: a pure function.
#pragma once

#include <cmath>
#include <cstdint>

namespace modserve {

inline double WarmupCosineLr(int64_t step, int64_t warmup, int64_t total, double peak, double min_ratio) {
  if (warmup > 0 && step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (total <= warmup) return peak;
  double progress = static_cast<double>(step - warmup) / static_cast<double>(total - warmup);
  if (progress > 1.0) progress = 1.0;
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak * (min_ratio + (1.0 - min_ratio) * cosine);
}

}  // namespace modserve
