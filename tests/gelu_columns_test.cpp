// GeluColumns against the exact GELU in double precision: the AVX-512 path
// (erf by Abramowitz-Stegun 7.1.26 and a polynomial exp) and the portable one,
// with and without a bias, over a column range only; and the bf16 versions,
// which round after the bias and after GELU as torch's bf16 ops do.
#include "engine/gelu_columns.h"

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine/bf16_bits.h"

namespace modserve {
namespace {

double ExactGelu(double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }

struct Case {
  int64_t M = 5, N = 45, begin = 3, end = 40;  // a range that starts and ends inside 16-column groups
};

std::vector<float> Inputs(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 3.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = normal(rng);
  v[0] = 0.f, v[1] = -30.f, v[2] = 30.f, v[3] = -1e-20f;  // zero, both tails, a tiny value
  return v;
}

TEST(GeluColumns, BothPathsMatchTheExactGeluOnTheirColumnsOnly) {
  const Case c;
  const auto x = Inputs(c.M * c.N, 1);
  const auto bias = Inputs(c.N, 2);
  for (bool with_bias : {false, true}) {
    for (auto* fn : {&GeluColumns, &GeluColumnsPortable}) {
      auto y = x;
      fn(y.data(), c.M, c.N, c.begin, c.end, with_bias ? bias.data() : nullptr);
      for (int64_t i = 0; i < c.M; ++i) {
        for (int64_t j = 0; j < c.N; ++j) {
          const size_t at = static_cast<size_t>(i * c.N + j);
          if (j < c.begin || j >= c.end) {
            EXPECT_EQ(y[at], x[at]) << "column " << j << " is outside the range";
            continue;
          }
          const double want = ExactGelu(static_cast<double>(x[at]) + (with_bias ? bias[static_cast<size_t>(j)] : 0.0));
          EXPECT_NEAR(y[at], want, 5e-7 * (1 + std::abs(want))) << i << "," << j << " bias " << with_bias;
        }
      }
    }
  }
}

TEST(GeluColumns, Bf16RoundsAfterTheBiasAndAfterGelu) {
  const Case c;
  const auto xf = Inputs(c.M * c.N, 3);
  const auto bf = Inputs(c.N, 4);
  std::vector<uint16_t> x(xf.size()), bias(bf.size());
  for (size_t i = 0; i < xf.size(); ++i) x[i] = FloatToBf16(xf[i]);
  for (size_t i = 0; i < bf.size(); ++i) bias[i] = FloatToBf16(bf[i]);
  for (bool with_bias : {false, true}) {
    auto fast = x, portable = x;
    GeluColumnsBf16(fast.data(), c.M, c.N, c.begin, c.end, with_bias ? bias.data() : nullptr);
    GeluColumnsPortableBf16(portable.data(), c.M, c.N, c.begin, c.end, with_bias ? bias.data() : nullptr);
    int64_t differ = 0;
    for (int64_t i = 0; i < c.M; ++i) {
      for (int64_t j = c.begin; j < c.end; ++j) {
        const size_t at = static_cast<size_t>(i * c.N + j);
        float v = Bf16ToFloat(x[at]);
        if (with_bias) v = Bf16ToFloat(FloatToBf16(v + Bf16ToFloat(bias[static_cast<size_t>(j)])));
        // In f32, as torch's bf16 GELU computes (in double, far tails such as
        // gelu(-6) = -6e-9 would not round to the -0 that f32 gives).
        const uint16_t want = FloatToBf16(0.5f * v * (1.f + std::erf(v * 0.70710678f)));
        EXPECT_EQ(portable[at], want) << i << "," << j;
        // One bf16 step at most: erf's last float bits can move a rounding.
        EXPECT_LE(std::abs(static_cast<int>(fast[at]) - static_cast<int>(want)), 1) << i << "," << j;
        differ += fast[at] != want;
      }
      for (int64_t j = 0; j < c.N; ++j) {
        if (j >= c.begin && j < c.end) continue;
        EXPECT_EQ(fast[static_cast<size_t>(i * c.N + j)], x[static_cast<size_t>(i * c.N + j)]) << "column " << j;
      }
    }
    EXPECT_LE(differ, 3) << "of " << c.M * (c.end - c.begin);
  }
}

}  // namespace
}  // namespace modserve
