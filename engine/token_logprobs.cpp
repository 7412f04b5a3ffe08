#include "engine/token_logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace modserve {

TokenLogprobs ComputeTokenLogprobs(const std::vector<float>& logits, int64_t token, int64_t top_n) {
  // log p_i = l_i - (max + log sum_j e^(l_j - max))
  double max = -std::numeric_limits<double>::infinity();
  for (float l : logits) max = std::max(max, static_cast<double>(l));
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max);
  const double log_z = max + std::log(sum);
  auto logprob = [&](int64_t id) { return static_cast<float>(static_cast<double>(logits[static_cast<size_t>(id)]) - log_z); };

  TokenLogprobs out;
  out.chosen = {token, logprob(token)};
  const auto n = std::min<int64_t>(std::max<int64_t>(top_n, 0), static_cast<int64_t>(logits.size()));
  if (n == 0) return out;
  std::vector<int64_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), int64_t{0});
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int64_t a, int64_t b) {
    const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
    return la != lb ? la > lb : a < b;
  });
  out.top.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.top.push_back({ids[static_cast<size_t>(i)], logprob(ids[static_cast<size_t>(i)])});
  return out;
}

}  // namespace modserve
