#include "engine/token_logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace modserve {

TokenLogprobs ComputeTokenLogprobs(const float* logits, size_t vocab, int64_t token, int64_t top_n) {
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  std::vector<double> l(vocab);  // NaN as -inf, so the order below is a strict weak one
  for (size_t i = 0; i < vocab; ++i) l[i] = std::isnan(logits[i]) ? kNegInf : static_cast<double>(logits[i]);
  // log p_i = l_i - (max + log sum_j e^(l_j - max))
  const double max = l.empty() ? kNegInf : *std::max_element(l.begin(), l.end());
  double sum = 0;
  for (double x : l) sum += std::exp(x - max);
  const double log_z = max + std::log(sum);
  auto logprob = [&](int64_t id) { return static_cast<float>(l[static_cast<size_t>(id)] - log_z); };

  TokenLogprobs out;
  out.chosen = {token, logprob(token)};
  const auto n = std::min<int64_t>(std::max<int64_t>(top_n, 0), static_cast<int64_t>(l.size()));
  if (n == 0) return out;
  std::vector<int64_t> ids(l.size());
  std::iota(ids.begin(), ids.end(), int64_t{0});
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int64_t a, int64_t b) {
    const double la = l[static_cast<size_t>(a)], lb = l[static_cast<size_t>(b)];
    return la != lb ? la > lb : a < b;
  });
  out.top.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[static_cast<size_t>(i)];
    out.top.push_back({id, logprob(id)});
  }
  return out;
}

}  // namespace modserve
