#include "engine/decode_attention.h"

#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MODSERVE_X86 1
#endif

namespace modserve {

namespace {

// Scores of sequence i's query against every cached key, all heads together
// (a cached K row is [H, hd], contiguous): w[h * L + t] = q_h · k_t,h * scale.
// Then softmax per head, then out_h = sum_t w[h * L + t] * v_t,h. Each cached
// row is read once. K_POOL and V_POOL are the pools typed as stored; DOT and
// AXPY read that type. A macro, not a template: the AVX-512 copy must be
// compiled inside a function with that target for DOT and AXPY to inline.
#define MODSERVE_DECODE_ONE_SEQUENCE(a, i, buf, K_POOL, V_POOL, DOT, AXPY)              \
  do {                                                                                  \
    const int64_t H = (a).heads, hd = (a).head_dim;                                     \
    const int64_t* slots = (a).slots + (a).offsets[i];                                  \
    const int64_t L = (a).offsets[(i) + 1] - (a).offsets[i];                            \
    const float* q = (a).q + (i) * H * hd;                                              \
    (buf).resize(static_cast<size_t>(H * L));                                           \
    float* w = (buf).data();                                                            \
    for (int64_t t = 0; t < L; ++t) {                                                   \
      const auto* k = (K_POOL) + slots[t] * H * hd;                                     \
      for (int64_t h = 0; h < H; ++h) w[h * L + t] = DOT(q + h * hd, k + h * hd, hd) * (a).scale; \
    }                                                                                   \
    for (int64_t h = 0; h < H; ++h) {                                                   \
      float* wh = w + h * L;                                                            \
      const float max = *std::max_element(wh, wh + L);                                  \
      float sum = 0.f;                                                                  \
      for (int64_t t = 0; t < L; ++t) sum += (wh[t] = std::exp(wh[t] - max));           \
      const float inv = 1.f / sum;                                                      \
      for (int64_t t = 0; t < L; ++t) wh[t] *= inv;                                     \
    }                                                                                   \
    float* out = (a).out + (i) * H * hd;                                                \
    std::fill(out, out + H * hd, 0.f);                                                  \
    for (int64_t t = 0; t < L; ++t) {                                                   \
      const auto* v = (V_POOL) + slots[t] * H * hd;                                     \
      for (int64_t h = 0; h < H; ++h) AXPY(w[h * L + t], v + h * hd, out + h * hd, hd); \
    }                                                                                   \
  } while (false)

inline float ToFloat(float x) { return x; }
inline float ToFloat(uint16_t bf16) {
  const uint32_t bits = static_cast<uint32_t>(bf16) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <typename T>
float DotPortable(const float* x, const T* y, int64_t n) {
  float s = 0.f;
  for (int64_t d = 0; d < n; ++d) s += x[d] * ToFloat(y[d]);
  return s;
}

template <typename T>
void AxpyPortable(float p, const T* v, float* o, int64_t n) {
  for (int64_t d = 0; d < n; ++d) o[d] += p * ToFloat(v[d]);
}

template <typename T>
void RunPortable(const DecodeAttentionArgs& a, int64_t begin, int64_t end) {
  std::vector<float> buf;
  const auto* kp = static_cast<const T*>(a.k_pool);
  const auto* vp = static_cast<const T*>(a.v_pool);
  for (int64_t i = begin; i < end; ++i) MODSERVE_DECODE_ONE_SEQUENCE(a, i, buf, kp, vp, DotPortable<T>, AxpyPortable<T>);
}

#ifdef MODSERVE_X86
// GCC 12's _mm512_reduce_add_ps starts from _mm512_undefined_ps(), which its
// own -Wuninitialized flags in every caller.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// 16 stored numbers as f32.
__attribute__((target("avx512f"), always_inline)) inline __m512 Load16(const float* p) { return _mm512_loadu_ps(p); }
__attribute__((target("avx512f"), always_inline)) inline __m512 Load16(const uint16_t* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// head_dim is a multiple of 16.
template <typename T>
__attribute__((target("avx512f"), always_inline)) inline float DotAvx512(const float* x, const T* y, int64_t n) {
  __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(x), Load16(y));
  for (int64_t d = 16; d < n; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + d), Load16(y + d), acc);
  return _mm512_reduce_add_ps(acc);
}

template <typename T>
__attribute__((target("avx512f"), always_inline)) inline void AxpyAvx512(float p, const T* v, float* o, int64_t n) {
  const __m512 pv = _mm512_set1_ps(p);
  for (int64_t d = 0; d < n; d += 16) _mm512_storeu_ps(o + d, _mm512_fmadd_ps(pv, Load16(v + d), _mm512_loadu_ps(o + d)));
}

template <typename T>
__attribute__((target("avx512f"))) void RunAvx512(const DecodeAttentionArgs& a, int64_t begin, int64_t end) {
  std::vector<float> buf;
  const auto* kp = static_cast<const T*>(a.k_pool);
  const auto* vp = static_cast<const T*>(a.v_pool);
  for (int64_t i = begin; i < end; ++i) MODSERVE_DECODE_ONE_SEQUENCE(a, i, buf, kp, vp, DotAvx512<T>, AxpyAvx512<T>);
}
#pragma GCC diagnostic pop
#endif

void Run(GemmPath path, const DecodeAttentionArgs& a, int64_t begin, int64_t end) {
  const bool bf16 = a.kv_element == KvElement::kBf16;
#ifdef MODSERVE_X86
  if (path == GemmPath::kAvx512 && a.head_dim % 16 == 0) {
    return bf16 ? RunAvx512<uint16_t>(a, begin, end) : RunAvx512<float>(a, begin, end);
  }
#endif
  (void)path;
  return bf16 ? RunPortable<uint16_t>(a, begin, end) : RunPortable<float>(a, begin, end);
}

}  // namespace

void DecodeAttention(const DecodeAttentionArgs& a, int64_t begin, int64_t end) { Run(BestGemmPath(), a, begin, end); }

void DecodeAttentionOn(GemmPath path, const DecodeAttentionArgs& a, int64_t begin, int64_t end) { Run(path, a, begin, end); }

}  // namespace modserve
