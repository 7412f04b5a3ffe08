// DecodeAttention against a plain double-precision softmax attention: slots
// scattered over the pool in any order, sequences of different lengths,
// head sizes with and without a vector path, every path this CPU runs.
#include "engine/decode_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace modserve {
namespace {

struct Problem {
  int64_t heads, head_dim;
  std::vector<int64_t> lengths;  // cached tokens per sequence
};

void ExpectMatches(GemmPath path, const Problem& pr, std::mt19937* rng) {
  const int64_t H = pr.heads, hd = pr.head_dim, n = static_cast<int64_t>(pr.lengths.size());
  int64_t total = 0;
  for (int64_t l : pr.lengths) total += l;
  const int64_t pool = total + 7;  // some slots belong to nobody
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  auto random = [&](int64_t count) {
    std::vector<float> v(static_cast<size_t>(count));
    for (auto& x : v) x = u(*rng);
    return v;
  };
  const auto q = random(n * H * hd), k = random(pool * H * hd), v = random(pool * H * hd);
  std::vector<int64_t> perm(static_cast<size_t>(pool));
  for (int64_t s = 0; s < pool; ++s) perm[s] = s;
  std::shuffle(perm.begin(), perm.end(), *rng);
  std::vector<int64_t> slots(perm.begin(), perm.begin() + total), offsets{0};
  for (int64_t l : pr.lengths) offsets.push_back(offsets.back() + l);

  std::vector<float> out(static_cast<size_t>(n * H * hd), std::nanf(""));
  DecodeAttentionArgs a;
  a.q = q.data();
  a.k_pool = k.data();
  a.v_pool = v.data();
  a.slots = slots.data();
  a.offsets = offsets.data();
  a.heads = H;
  a.head_dim = hd;
  a.scale = 1.f / std::sqrt(static_cast<float>(hd));
  a.out = out.data();
  for (int64_t i = 0; i < n; i += 2) DecodeAttentionOn(path, a, i, std::min(n, i + 2));  // ranges as threads get them

  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t L = pr.lengths[i];
      std::vector<double> s(static_cast<size_t>(L));
      double max = -1e300, sum = 0;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t slot = slots[offsets[i] + t];
        double d = 0;
        for (int64_t e = 0; e < hd; ++e) d += static_cast<double>(q[(i * H + h) * hd + e]) * k[(slot * H + h) * hd + e];
        s[t] = d * a.scale;
        max = std::max(max, s[t]);
      }
      for (auto& x : s) sum += (x = std::exp(x - max));
      for (int64_t e = 0; e < hd; ++e) {
        double want = 0;
        for (int64_t t = 0; t < L; ++t) want += s[t] / sum * v[(slots[offsets[i] + t] * H + h) * hd + e];
        ASSERT_NEAR(out[(i * H + h) * hd + e], want, 1e-4)
            << GemmPathName(path) << " hd=" << hd << " sequence " << i << " head " << h << " dim " << e;
      }
    }
  }
}

TEST(DecodeAttention, EveryPathThisCpuRunsMatchesTheReference) {
  std::mt19937 rng(5);
  const std::vector<Problem> problems = {{3, 16, {1, 5, 17, 2}}, {2, 32, {9, 1, 40}}, {4, 20, {3, 11, 1, 6, 2}}, {1, 64, {33}}};
  for (GemmPath path : {GemmPath::kPortable, GemmPath::kAvx2, GemmPath::kAvx512}) {
    if (!CpuSupports(path)) {
      std::printf("[ NOTE     ] this CPU has no %s path; not tested here\n", GemmPathName(path));
      continue;
    }
    for (const Problem& pr : problems) ExpectMatches(path, pr, &rng);
  }
}

}  // namespace
}  // namespace modserve
