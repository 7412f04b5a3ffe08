// RmsNormRows and RopeRowsInPlace against plain double-precision formulas:
// dimensions on and off the 16-float lanes, with and without a weight, in
// place, rows with a stride, and positions in any order; the bf16 versions
// against the same formulas on the bf16 inputs, to bf16 rounding.
#include "engine/row_norm_rope.h"

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine/bf16_bits.h"

namespace modserve {
namespace {

std::vector<float> Random(size_t n, std::mt19937* rng) {
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(*rng);
  return v;
}

TEST(RmsNormRows, MatchesTheFormulaWithAndWithoutWeightAndInPlace) {
  std::mt19937 rng(3);
  for (int64_t dim : {1, 7, 16, 33, 192, 1024}) {
    const int64_t rows = 5;
    const float eps = 1e-5f;
    const auto x = Random(static_cast<size_t>(rows * dim), &rng), w = Random(static_cast<size_t>(dim), &rng);
    for (bool weighted : {false, true}) {
      std::vector<float> out(x.size(), std::nanf("")), inplace = x;
      RmsNormRows(x.data(), rows, dim, weighted ? w.data() : nullptr, eps, out.data());
      RmsNormRows(inplace.data(), rows, dim, weighted ? w.data() : nullptr, eps, inplace.data());
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t k = 0; k < dim; ++k) ss += static_cast<double>(x[r * dim + k]) * x[r * dim + k];
        const double scale = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
        for (int64_t k = 0; k < dim; ++k) {
          const double want = x[r * dim + k] * scale * (weighted ? w[k] : 1.0);
          const size_t i = static_cast<size_t>(r * dim + k);
          ASSERT_NEAR(out[i], want, 1e-5 * (1 + std::abs(want))) << "dim " << dim << " row " << r << " col " << k;
          ASSERT_EQ(inplace[i], out[i]) << "in place differs, dim " << dim;
        }
      }
    }
  }
}

// Bits of x rounded to bf16; x itself becomes the rounded value.
std::vector<uint16_t> ToBf16(std::vector<float>* x) {
  std::vector<uint16_t> b(x->size());
  for (size_t i = 0; i < b.size(); ++i) (*x)[i] = Bf16ToFloat(b[i] = FloatToBf16((*x)[i]));
  return b;
}

TEST(RmsNormRows, Bf16MatchesTheFormulaToBf16Rounding) {
  std::mt19937 rng(4);
  for (int64_t dim : {1, 7, 33, 192}) {
    const int64_t rows = 3;
    auto x = Random(static_cast<size_t>(rows * dim), &rng), w = Random(static_cast<size_t>(dim), &rng);
    const auto xb = ToBf16(&x), wb = ToBf16(&w);
    for (bool weighted : {false, true}) {
      std::vector<uint16_t> out(xb.size(), 0xffff), inplace = xb;
      RmsNormRowsBf16(xb.data(), rows, dim, weighted ? wb.data() : nullptr, 1e-5f, out.data());
      RmsNormRowsBf16(inplace.data(), rows, dim, weighted ? wb.data() : nullptr, 1e-5f, inplace.data());
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t k = 0; k < dim; ++k) ss += static_cast<double>(x[r * dim + k]) * x[r * dim + k];
        const double scale = 1.0 / std::sqrt(ss / static_cast<double>(dim) + 1e-5);
        for (int64_t k = 0; k < dim; ++k) {
          const double want = x[r * dim + k] * scale * (weighted ? w[k] : 1.0);
          const size_t i = static_cast<size_t>(r * dim + k);
          ASSERT_NEAR(Bf16ToFloat(out[i]), want, std::abs(want) / 256 + 1e-6) << "dim " << dim << " row " << r << " col " << k;
          ASSERT_EQ(inplace[i], out[i]) << "in place differs, dim " << dim;
        }
      }
    }
  }
}

TEST(RopeRowsInPlace, Bf16RotatesToBf16Rounding) {
  std::mt19937 rng(6);
  const int64_t heads = 2, head_dim = 8, half = head_dim / 2, rows = 3;
  const std::vector<int64_t> positions{2, 0, 1};
  std::vector<float> cos_t(static_cast<size_t>(3 * half)), sin_t(cos_t.size());
  for (size_t i = 0; i < cos_t.size(); ++i) {
    cos_t[i] = static_cast<float>(std::cos(0.3 * static_cast<double>(i)));
    sin_t[i] = static_cast<float>(std::sin(0.3 * static_cast<double>(i)));
  }
  auto x = Random(static_cast<size_t>(rows * heads * head_dim), &rng);
  auto y = ToBf16(&x);
  RopeRowsInPlaceBf16(y.data(), rows, heads * head_dim, heads, head_dim, positions.data(), cos_t.data(), sin_t.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        const size_t a = static_cast<size_t>((r * heads + h) * head_dim + i), b = a + static_cast<size_t>(half);
        const size_t t = static_cast<size_t>(positions[static_cast<size_t>(r)] * half + i);
        const double ya = static_cast<double>(x[a]) * cos_t[t] - static_cast<double>(x[b]) * sin_t[t];
        const double yb = static_cast<double>(x[a]) * sin_t[t] + static_cast<double>(x[b]) * cos_t[t];
        EXPECT_NEAR(Bf16ToFloat(y[a]), ya, std::abs(ya) / 256 + 1e-6);
        EXPECT_NEAR(Bf16ToFloat(y[b]), yb, std::abs(yb) / 256 + 1e-6);
      }
    }
  }
}

TEST(RopeRowsInPlace, RotatesEveryHeadOfEveryStridedRowAtItsPosition) {
  std::mt19937 rng(5);
  const int64_t heads = 3, head_dim = 10, half = head_dim / 2, stride = heads * head_dim + 4, positions_in_table = 9;
  const std::vector<int64_t> positions{4, 0, 8, 4};
  const int64_t rows = static_cast<int64_t>(positions.size());
  std::vector<float> cos_t(static_cast<size_t>(positions_in_table * half)), sin_t(cos_t.size());
  for (int64_t p = 0; p < positions_in_table; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double ang = static_cast<double>(p) * std::pow(100.0, -2.0 * static_cast<double>(i) / head_dim);
      cos_t[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(ang));
      sin_t[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(ang));
    }
  }
  const auto x = Random(static_cast<size_t>(rows * stride), &rng);
  auto y = x;
  RopeRowsInPlace(y.data(), rows, stride, heads, head_dim, positions.data(), cos_t.data(), sin_t.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        const size_t a = static_cast<size_t>(r * stride + h * head_dim + i), b = a + static_cast<size_t>(half);
        const size_t t = static_cast<size_t>(positions[static_cast<size_t>(r)] * half + i);
        EXPECT_NEAR(y[a], static_cast<double>(x[a]) * cos_t[t] - static_cast<double>(x[b]) * sin_t[t], 1e-5);
        EXPECT_NEAR(y[b], static_cast<double>(x[a]) * sin_t[t] + static_cast<double>(x[b]) * cos_t[t], 1e-5);
      }
    }
    for (int64_t pad = heads * head_dim; pad < stride; ++pad) {  // the gap between rows is left alone
      EXPECT_EQ(y[static_cast<size_t>(r * stride + pad)], x[static_cast<size_t>(r * stride + pad)]);
    }
  }
}

}  // namespace
}  // namespace modserve
