// FewRowGemm against a plain double-precision reference: every row count the
// tiles special-case, K with and without a vector tail, N not a multiple of
// the weight tile, and output column ranges split the way threads split them;
// the same for the bf16 kernel, against the reference on the bf16 inputs.
#include "engine/few_row_gemm.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine/bf16_bits.h"

namespace modserve {
namespace {

struct Case {
  int64_t M, N, K;
};

std::vector<float> Random(size_t n, std::mt19937* rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(*rng);
  return v;
}

// y [M, N] = x [M, K] · w [N, K]ᵀ in double.
std::vector<double> Reference(const std::vector<float>& x, const std::vector<float>& w, const Case& c) {
  std::vector<double> y(static_cast<size_t>(c.M * c.N));
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t n = 0; n < c.N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < c.K; ++k) s += static_cast<double>(x[m * c.K + k]) * w[n * c.K + k];
      y[m * c.N + n] = s;
    }
  return y;
}

void ExpectMatches(GemmPath path) {
  std::mt19937 rng(7);
  const std::vector<Case> cases = {{1, 1, 1},   {1, 5, 16},   {2, 7, 17},   {3, 4, 33},    {4, 9, 64},  {5, 3, 100},
                                   {7, 13, 192}, {8, 16, 31}, {9, 6, 768}, {16, 33, 129}, {33, 5, 47}, {130, 11, 40}};
  for (const Case& c : cases) {
    const auto x = Random(static_cast<size_t>(c.M * c.K), &rng);
    const auto w = Random(static_cast<size_t>(c.N * c.K), &rng);
    const auto want = Reference(x, w, c);
    std::vector<float> y(static_cast<size_t>(c.M * c.N), std::nanf(""));
    // Uneven column ranges, as ParallelChunks hands them to threads.
    for (int64_t begin = 0; begin < c.N;) {
      const int64_t end = std::min(c.N, begin + 1 + begin % 5);
      FewRowGemmOn(path, x.data(), c.M, w.data(), c.N, c.K, y.data(), begin, end);
      begin = end;
    }
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_NEAR(y[i], want[i], 1e-5 * c.K) << GemmPathName(path) << " M=" << c.M << " N=" << c.N << " K=" << c.K << " at " << i;
    }
  }
}

TEST(FewRowGemm, EveryPathThisCpuRunsMatchesTheReference) {
  for (GemmPath path : {GemmPath::kPortable, GemmPath::kAvx2, GemmPath::kAvx512}) {
    if (!CpuSupports(path)) {
      std::printf("[ NOTE     ] this CPU has no %s path; not tested here\n", GemmPathName(path));
      continue;
    }
    ExpectMatches(path);
  }
  EXPECT_TRUE(CpuSupports(BestGemmPath()));
}

TEST(FewRowGemm, Bf16MatchesTheReferenceWhereTheCpuHasIt) {
  if (!CpuHasBf16Dot()) {
    GTEST_SKIP() << "this CPU has no AVX512-BF16: the engine keeps torch's bf16 matmul";
  }
  std::mt19937 rng(11);
  const std::vector<Case> cases = {{1, 1, 1},   {1, 5, 32},    {2, 7, 33},  {3, 4, 63},   {4, 9, 64},
                                   {5, 3, 100}, {7, 13, 192}, {9, 6, 768}, {16, 33, 129}, {33, 5, 47}};
  for (const Case& c : cases) {
    auto xf = Random(static_cast<size_t>(c.M * c.K), &rng);
    auto wf = Random(static_cast<size_t>(c.N * c.K), &rng);
    std::vector<uint16_t> x(xf.size()), w(wf.size());
    for (size_t i = 0; i < xf.size(); ++i) xf[i] = Bf16ToFloat(x[i] = FloatToBf16(xf[i]));
    for (size_t i = 0; i < wf.size(); ++i) wf[i] = Bf16ToFloat(w[i] = FloatToBf16(wf[i]));
    const auto want = Reference(xf, wf, c);
    std::vector<uint16_t> y(static_cast<size_t>(c.M * c.N), 0xffff);
    for (int64_t begin = 0; begin < c.N;) {
      const int64_t end = std::min(c.N, begin + 1 + begin % 5);
      FewRowGemmBf16(x.data(), c.M, w.data(), c.N, c.K, y.data(), begin, end);
      begin = end;
    }
    for (size_t i = 0; i < y.size(); ++i) {
      // bf16 keeps 8 bits of mantissa: the result's own rounding, plus f32 sums.
      ASSERT_NEAR(Bf16ToFloat(y[i]), want[i], std::abs(want[i]) / 128 + 1e-5 * c.K)
          << "M=" << c.M << " N=" << c.N << " K=" << c.K << " at " << i;
    }
  }
}

TEST(FewRowGemm, WritesOnlyItsColumnRange) {
  std::mt19937 rng(3);
  const Case c{5, 12, 40};
  const auto x = Random(static_cast<size_t>(c.M * c.K), &rng);
  const auto w = Random(static_cast<size_t>(c.N * c.K), &rng);
  std::vector<float> y(static_cast<size_t>(c.M * c.N), -7.f);
  FewRowGemm(x.data(), c.M, w.data(), c.N, c.K, y.data(), 3, 9);
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t n = 0; n < c.N; ++n) {
      if (n >= 3 && n < 9) {
        EXPECT_NE(y[m * c.N + n], -7.f);
      } else {
        EXPECT_EQ(y[m * c.N + n], -7.f) << "column " << n << " outside [3, 9) was written";
      }
    }
}

}  // namespace
}  // namespace modserve
