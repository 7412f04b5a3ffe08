#include "engine/row_norm_rope.h"

#include <cmath>

#include "engine/bf16_bits.h"

namespace modserve {

namespace {

inline float Load(float x) { return x; }
inline float Load(uint16_t b) { return Bf16ToFloat(b); }
inline void Store(float* p, float v) { *p = v; }
inline void Store(uint16_t* p, float v) { *p = FloatToBf16(v); }

// T: float, or uint16_t for bf16 bits (computed in f32, rounded once).
template <typename T>
void RmsNorm(const T* x, int64_t rows, int64_t dim, const T* weight, float eps, T* out) {
  constexpr int kLanes = 16;  // independent partial sums, so the compiler can vectorize the reduction
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T* yr = out + r * dim;
    float part[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= dim; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) part[j] += Load(xr[i + j]) * Load(xr[i + j]);
    }
    for (; i < dim; ++i) part[i % kLanes] += Load(xr[i]) * Load(xr[i]);
    float sum = 0;
    for (float p : part) sum += p;
    const float scale = 1.0f / std::sqrt(sum / static_cast<float>(dim) + eps);
    if (weight == nullptr) {
      for (int64_t k = 0; k < dim; ++k) Store(yr + k, Load(xr[k]) * scale);
    } else {
      for (int64_t k = 0; k < dim; ++k) Store(yr + k, (Load(xr[k]) * scale) * Load(weight[k]));
    }
  }
}

template <typename T>
void Rope(T* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int64_t* positions, const float* cos_table,
          const float* sin_table) {
  const int64_t half = head_dim / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = cos_table + positions[r] * half;
    const float* s = sin_table + positions[r] * half;
    for (int64_t h = 0; h < heads; ++h) {
      T* x1 = x + r * row_stride + h * head_dim;
      T* x2 = x1 + half;
      for (int64_t i = 0; i < half; ++i) {
        const float a = Load(x1[i]), b = Load(x2[i]);
        Store(x1 + i, a * c[i] - b * s[i]);
        Store(x2 + i, a * s[i] + b * c[i]);
      }
    }
  }
}

}  // namespace

void RmsNormRows(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out) {
  RmsNorm(x, rows, dim, weight, eps, out);
}

void RmsNormRowsBf16(const uint16_t* x, int64_t rows, int64_t dim, const uint16_t* weight, float eps, uint16_t* out) {
  RmsNorm(x, rows, dim, weight, eps, out);
}

void RopeRowsInPlace(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int64_t* positions,
                     const float* cos_table, const float* sin_table) {
  Rope(x, rows, row_stride, heads, head_dim, positions, cos_table, sin_table);
}

void RopeRowsInPlaceBf16(uint16_t* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int64_t* positions,
                         const float* cos_table, const float* sin_table) {
  Rope(x, rows, row_stride, heads, head_dim, positions, cos_table, sin_table);
}

}  // namespace modserve
