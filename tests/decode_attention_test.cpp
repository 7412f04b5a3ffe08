// DecodeAttention against a plain double-precision softmax attention: slots
// scattered over the pool in any order, query rows of different lengths
// (more and fewer than the AVX-512 path's 16 keys at a time), rows that read
// prefixes of one slot list as a prefill chunk does, head sizes with and
// without a vector path, f32 and bf16 pools, every path this CPU runs.
#include "engine/decode_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine/bf16_bits.h"

namespace modserve {
namespace {

struct Problem {
  int64_t heads, head_dim;
  std::vector<int64_t> lengths;  // cached tokens per sequence
  int64_t chunk = 0;             // the last sequence's last `chunk` keys (at most its length) are also a prefill chunk's rows
};

void ExpectMatches(GemmPath path, KvElement element, const Problem& pr, std::mt19937* rng) {
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
  auto k = random(pool * H * hd), v = random(pool * H * hd);
  // A bf16 pool stores k and v rounded; the reference then uses the rounded values.
  std::vector<uint16_t> k16(k.size()), v16(v.size());
  for (size_t e = 0; e < k.size(); ++e) {
    k16[e] = FloatToBf16(k[e]);
    v16[e] = FloatToBf16(v[e]);
    if (element == KvElement::kBf16) {
      k[e] = Bf16ToFloat(k16[e]);
      v[e] = Bf16ToFloat(v16[e]);
    }
  }
  std::vector<int64_t> perm(static_cast<size_t>(pool));
  for (int64_t s = 0; s < pool; ++s) perm[s] = s;
  std::shuffle(perm.begin(), perm.end(), *rng);
  std::vector<int64_t> slots(perm.begin(), perm.begin() + total), starts, lengths;
  for (int64_t l : pr.lengths) {
    starts.push_back(starts.empty() ? 0 : starts.back() + lengths.back());
    lengths.push_back(l);
  }
  // Prefill rows: the last sequence's chunk, row r seeing the keys up to itself.
  for (int64_t r = 0; r < pr.chunk; ++r) {
    starts.push_back(starts[n - 1]);
    lengths.push_back(lengths[n - 1] - pr.chunk + 1 + r);
  }
  const auto rows = static_cast<int64_t>(lengths.size());
  auto q = random(rows * H * hd);

  std::vector<float> out(static_cast<size_t>(rows * H * hd), std::nanf(""));
  DecodeAttentionArgs a;
  a.q = q.data();
  const bool bf16 = element == KvElement::kBf16;
  a.k_pool = bf16 ? static_cast<const void*>(k16.data()) : k.data();
  a.v_pool = bf16 ? static_cast<const void*>(v16.data()) : v.data();
  a.kv_element = element;
  a.slots = slots.data();
  a.starts = starts.data();
  a.lengths = lengths.data();
  a.heads = H;
  a.head_dim = hd;
  a.scale = 1.f / std::sqrt(static_cast<float>(hd));
  a.out = out.data();
  for (int64_t i = 0; i < rows; i += 2) DecodeAttentionOn(path, a, i, std::min(rows, i + 2));  // ranges as threads get them

  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t L = lengths[i];
      std::vector<double> s(static_cast<size_t>(L));
      double max = -1e300, sum = 0;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t slot = slots[starts[i] + t];
        double d = 0;
        for (int64_t e = 0; e < hd; ++e) d += static_cast<double>(q[(i * H + h) * hd + e]) * k[(slot * H + h) * hd + e];
        s[t] = d * a.scale;
        max = std::max(max, s[t]);
      }
      for (auto& x : s) sum += (x = std::exp(x - max));
      for (int64_t e = 0; e < hd; ++e) {
        double want = 0;
        for (int64_t t = 0; t < L; ++t) want += s[t] / sum * v[(slots[starts[i] + t] * H + h) * hd + e];
        ASSERT_NEAR(out[(i * H + h) * hd + e], want, 1e-4)
            << GemmPathName(path) << (bf16 ? " bf16" : " f32") << " hd=" << hd << " row " << i << " head " << h << " dim " << e;
      }
    }
  }
}

TEST(DecodeAttention, EveryPathThisCpuRunsMatchesTheReference) {
  std::mt19937 rng(5);
  const std::vector<Problem> problems = {{3, 16, {1, 5, 17, 2}},       {2, 32, {9, 1, 40}, 7}, {4, 20, {3, 11, 1, 2, 6}, 3},
                                         {1, 64, {33}, 20},            {6, 32, {16, 32, 130}},  {17, 16, {18, 3}, 2},
                                         {16, 64, {48, 15, 1, 64}, 5}};
  for (GemmPath path : {GemmPath::kPortable, GemmPath::kAvx2, GemmPath::kAvx512}) {
    if (!CpuSupports(path)) {
      std::printf("[ NOTE     ] this CPU has no %s path; not tested here\n", GemmPathName(path));
      continue;
    }
    for (KvElement element : {KvElement::kF32, KvElement::kBf16}) {
      for (const Problem& pr : problems) ExpectMatches(path, element, pr, &rng);
    }
  }
}

}  // namespace
}  // namespace modserve
