// Sampler: picks the next token from one row of logits: greedy (temperature
// 0), or temperature / top-k / top-p sampling driven by a per-request RNG, so
// the same seed gives the same tokens whatever else runs beside the request.
//
// Thread-safety: a Sampler owns its RNG; use one per request.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace modserve {

struct SamplingParams {
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // 0: no top-k cut
  double top_p = 1.0;        // 1: no nucleus cut
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p) : params_(p), rng_(p.seed) {}
  // `logits` has one entry per vocabulary id.
  int64_t Sample(const std::vector<float>& logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace modserve
