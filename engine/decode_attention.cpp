#include "engine/decode_attention.h"

#include "engine/bf16_bits.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "engine/avx512_math.h"
#define MODSERVE_X86 1
#endif

namespace modserve {

namespace {

inline float ToFloat(float x) { return x; }
inline float ToFloat(uint16_t bf16) { return Bf16ToFloat(bf16); }

// Per row and head: scores q_h · k_t,h * scale, softmax, out_h = sum_t p_t v_t,h.
template <typename T>
void RunPortable(const DecodeAttentionArgs& a, int64_t begin, int64_t end) {
  const int64_t H = a.heads, hd = a.head_dim;
  const auto* kp = static_cast<const T*>(a.k_pool);
  const auto* vp = static_cast<const T*>(a.v_pool);
  std::vector<float> w;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t* slots = a.slots + a.starts[i];
    const int64_t L = a.lengths[i];
    w.resize(static_cast<size_t>(L));
    for (int64_t h = 0; h < H; ++h) {
      const float* q = a.q + (i * H + h) * hd;
      float max = -std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t < L; ++t) {
        const T* k = kp + (slots[t] * H + h) * hd;
        float s = 0.f;
        for (int64_t d = 0; d < hd; ++d) s += q[d] * ToFloat(k[d]);
        w[t] = s * a.scale;
        max = std::max(max, w[t]);
      }
      float sum = 0.f;
      for (int64_t t = 0; t < L; ++t) sum += (w[t] = std::exp(w[t] - max));
      float* o = a.out + (i * H + h) * hd;
      std::fill(o, o + hd, 0.f);
      for (int64_t t = 0; t < L; ++t) {
        const T* v = vp + (slots[t] * H + h) * hd;
        const float p = w[t] / sum;
        for (int64_t d = 0; d < hd; ++d) o[d] += p * ToFloat(v[d]);
      }
    }
  }
}

#ifdef MODSERVE_X86
// GCC 12's AVX-512 reduce intrinsics start from _mm512_undefined_ps(), which
// its own -Wuninitialized flags in every caller.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define MODSERVE_AVX512 __attribute__((target("avx512f")))
#define MODSERVE_AVX512_INLINE __attribute__((target("avx512f"), always_inline)) inline

// 16 stored numbers as f32.
MODSERVE_AVX512_INLINE __m512 Load16(const float* p) { return _mm512_loadu_ps(p); }
MODSERVE_AVX512_INLINE __m512 Load16(const uint16_t* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// Element j of the result is the sum of acc[j]'s 16 lanes: 15 adds and 30
// shuffles for all 16, where 16 separate reductions take 64 of each.
MODSERVE_AVX512_INLINE __m512 HorizontalSums16(const __m512* acc) {
  __m512 t[8], u[4];
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) {  // per 128-bit lane: partial sums of acc[2k], acc[2k+1], acc[2k], acc[2k+1]
    t[k] = _mm512_add_ps(_mm512_unpacklo_ps(acc[2 * k], acc[2 * k + 1]), _mm512_unpackhi_ps(acc[2 * k], acc[2 * k + 1]));
  }
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m) {  // per 128-bit lane: partial sums of acc[4m .. 4m + 3]
    u[m] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * m], t[2 * m + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(t[2 * m], t[2 * m + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // 128-bit lanes: u0 l0+l1, u0 l2+l3, u1 l0+l1, u1 l2+l3 (and the same for u2, u3).
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x88), _mm512_shuffle_f32x4(u[0], u[1], 0xDD));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x88), _mm512_shuffle_f32x4(u[2], u[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xDD));
}

// w[h * L16 + t] = scale * q_h · k_t,h for t < L, -inf up to L16. Keys go 16
// at a time, all heads over the same 16 rows while they sit in L1.
template <typename T>
MODSERVE_AVX512 void Scores(const float* q, const T* k_pool, const int64_t* slots, int64_t L, int64_t L16, int64_t H, int64_t hd,
                            float scale, float* w) {
  const int64_t row = H * hd;
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t t0 = 0; t0 < L; t0 += 16) {
    const int64_t nk = std::min<int64_t>(16, L - t0);
    const T* k[16];
    for (int64_t j = 0; j < 16; ++j) k[j] = k_pool + slots[t0 + (j < nk ? j : 0)] * row;  // past L: any valid row, masked
    const __mmask16 valid = FirstLanes(nk);
    for (int64_t h = 0; h < H; ++h) {
      __m512 acc[16];
#pragma GCC unroll 16
      for (auto& x : acc) x = _mm512_setzero_ps();
      for (int64_t d = h * hd; d < (h + 1) * hd; d += 16) {
        const __m512 qv = _mm512_loadu_ps(q + d);
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(qv, Load16(k[j] + d), acc[j]);
      }
      const __m512 s = _mm512_mul_ps(HorizontalSums16(acc), _mm512_set1_ps(scale));
      _mm512_storeu_ps(w + h * L16 + t0, _mm512_mask_blend_ps(valid, neg_inf, s));
    }
  }
}

// Turns head h's scores into e^(s - max) in place (0 past L); returns 1 / their sum.
MODSERVE_AVX512 float Softmax(float* wh, int64_t L, int64_t L16) {
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t t = 0; t < L16; t += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(wh + t));
  const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t t = 0; t < L16; t += 16) {
    const __m512 e = _mm512_maskz_mov_ps(FirstLanes(L - t), ExpNonPositive(_mm512_sub_ps(_mm512_loadu_ps(wh + t), max)));
    _mm512_storeu_ps(wh + t, e);
    sum = _mm512_add_ps(sum, e);
  }
  return 1.f / _mm512_reduce_add_ps(sum);
}

// out[c0, c0 + 16 NV) = sum_t w[h, t] v_t[c0, c0 + 16 NV) * inv_sum[h], h the
// head of each column: NV accumulators stay in registers over all keys.
template <int NV, typename T>
MODSERVE_AVX512 void WeightedValues(const T* v_pool, const int64_t* slots, int64_t L, int64_t row, int64_t c0, const float* w,
                                    int64_t L16, int64_t hd, const float* inv_sum, float* out) {
  const float* wc[NV];
  for (int c = 0; c < NV; ++c) wc[c] = w + (c0 + 16 * c) / hd * L16;
  __m512 acc[NV];
#pragma GCC unroll 16
  for (auto& x : acc) x = _mm512_setzero_ps();
  for (int64_t t = 0; t < L; ++t) {
    const T* v = v_pool + slots[t] * row + c0;
#pragma GCC unroll 16
    for (int c = 0; c < NV; ++c) acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(wc[c][t]), Load16(v + 16 * c), acc[c]);
  }
#pragma GCC unroll 16
  for (int c = 0; c < NV; ++c) {
    _mm512_storeu_ps(out + c0 + 16 * c, _mm512_mul_ps(acc[c], _mm512_set1_ps(inv_sum[(c0 + 16 * c) / hd])));
  }
}

template <typename T>
using WeightedValuesFn = void (*)(const T*, const int64_t*, int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*,
                                  float*);

// WeightedValues<nv> for nv in [1, kMaxVectors].
constexpr int kMaxVectors = 16;
template <typename T, int... NV>
WeightedValuesFn<T> PickWeightedValues(int nv, std::integer_sequence<int, NV...>) {
  static constexpr WeightedValuesFn<T> table[] = {&WeightedValues<NV + 1, T>...};
  return table[nv - 1];
}

template <typename T>
MODSERVE_AVX512 void RunAvx512(const DecodeAttentionArgs& a, int64_t begin, int64_t end) {
  const int64_t H = a.heads, hd = a.head_dim, row = H * hd;
  const auto* kp = static_cast<const T*>(a.k_pool);
  const auto* vp = static_cast<const T*>(a.v_pool);
  std::vector<float> w, inv_sum(static_cast<size_t>(H));  // w: [H, L16] scores, then e^(score - max)
  for (int64_t i = begin; i < end; ++i) {
    const int64_t* slots = a.slots + a.starts[i];
    const int64_t L = a.lengths[i], L16 = (L + 15) / 16 * 16;
    w.resize(static_cast<size_t>(H * L16));
    Scores(a.q + i * row, kp, slots, L, L16, H, hd, a.scale, w.data());
    for (int64_t h = 0; h < H; ++h) inv_sum[h] = Softmax(w.data() + h * L16, L, L16);
    for (int64_t c0 = 0; c0 < row; c0 += 16 * kMaxVectors) {
      const int nv = static_cast<int>(std::min<int64_t>(kMaxVectors, (row - c0) / 16));
      PickWeightedValues<T>(nv, std::make_integer_sequence<int, kMaxVectors>())(vp, slots, L, row, c0, w.data(), L16, hd,
                                                                                 inv_sum.data(), a.out + i * row);
    }
  }
}
#undef MODSERVE_AVX512_INLINE
#undef MODSERVE_AVX512
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
