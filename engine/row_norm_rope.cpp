#include "engine/row_norm_rope.h"

#include <cmath>

namespace modserve {

void RmsNormRows(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out) {
  constexpr int kLanes = 16;  // independent partial sums, so the compiler can vectorize the reduction
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = out + r * dim;
    float part[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= dim; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) part[j] += xr[i + j] * xr[i + j];
    }
    for (; i < dim; ++i) part[i % kLanes] += xr[i] * xr[i];
    float sum = 0;
    for (float p : part) sum += p;
    const float scale = 1.0f / std::sqrt(sum / static_cast<float>(dim) + eps);
    if (weight == nullptr) {
      for (int64_t k = 0; k < dim; ++k) yr[k] = xr[k] * scale;
    } else {
      for (int64_t k = 0; k < dim; ++k) yr[k] = (xr[k] * scale) * weight[k];
    }
  }
}

void RopeRowsInPlace(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int64_t* positions,
                     const float* cos_table, const float* sin_table) {
  const int64_t half = head_dim / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = cos_table + positions[r] * half;
    const float* s = sin_table + positions[r] * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* x1 = x + r * row_stride + h * head_dim;
      float* x2 = x1 + half;
      for (int64_t i = 0; i < half; ++i) {
        const float a = x1[i], b = x2[i];
        x1[i] = a * c[i] - b * s[i];
        x2[i] = a * s[i] + b * c[i];
      }
    }
  }
}

}  // namespace modserve
