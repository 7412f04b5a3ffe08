#include "engine/gelu_columns.h"

#include <cmath>

#include "engine/bf16_bits.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "engine/avx512_math.h"
#define MODSERVE_X86 1
#endif

namespace modserve {

namespace {

constexpr float kSqrtHalf = 0.70710678118654752f;

float Gelu(float v) { return 0.5f * v * (1.f + std::erf(v * kSqrtHalf)); }

inline float Load(float v) { return v; }
inline float Load(uint16_t v) { return Bf16ToFloat(v); }
inline void Store(float* p, float v) { *p = v; }
inline void Store(uint16_t* p, float v) { *p = FloatToBf16(v); }
// The bias sum as torch's add rounds it: not at all in f32, to bf16 in bf16.
inline float AddBias(float y, float b) { return y + b; }
inline float AddBias(uint16_t y, uint16_t b) { return Bf16ToFloat(FloatToBf16(Bf16ToFloat(y) + Bf16ToFloat(b))); }

template <typename T>
void Portable(T* y, int64_t M, int64_t N, int64_t begin, int64_t end, const T* bias) {
  for (int64_t i = 0; i < M; ++i) {
    T* row = y + i * N;
    for (int64_t j = begin; j < end; ++j) Store(row + j, Gelu(bias != nullptr ? AddBias(row[j], bias[j]) : Load(row[j])));
  }
}

#ifdef MODSERVE_X86
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define MODSERVE_AVX512_INLINE __attribute__((target("avx512f"), always_inline)) inline

// gelu of 16 floats: erf(|z|) = 1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) e^(-z²),
// t = 1 / (1 + p |z|), z = v / √2, with erf's sign restored.
MODSERVE_AVX512_INLINE __m512 Gelu16(__m512 v) {
  const __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(kSqrtHalf));
  const __m512 az = _mm512_abs_ps(z);
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_fmadd_ps(az, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = ExpNonPositive(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), az), az));
  const __m512 erf_abs = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.f));
  // Copy z's sign bit onto erf(|z|).
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  const __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(_mm512_set1_ps(1.f), erf));
}

// bf16 bits <-> f32 for 16 numbers; the rounding is FloatToBf16's (to
// nearest even, NaN kept a NaN).
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m512 Widen(__m256i b) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16)); }
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m256i Narrow(__m512 f) {
  const __m512i bits = _mm512_castps_si512(f);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(r);
}

__attribute__((target("avx512f"))) void Avx512(float* y, int64_t M, int64_t N, int64_t begin, int64_t end, const float* bias) {
  for (int64_t i = 0; i < M; ++i) {
    float* row = y + i * N;
    for (int64_t j = begin; j < end; j += 16) {
      const __mmask16 m = FirstLanes(end - j);
      __m512 v = _mm512_maskz_loadu_ps(m, row + j);
      if (bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + j));
      _mm512_mask_storeu_ps(row + j, m, Gelu16(v));
    }
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void Avx512Bf16(uint16_t* y, int64_t M, int64_t N, int64_t begin, int64_t end,
                                                          const uint16_t* bias) {
  for (int64_t i = 0; i < M; ++i) {
    uint16_t* row = y + i * N;
    for (int64_t j = begin; j < end; j += 16) {
      const __mmask16 m = FirstLanes(end - j);
      __m512 v = Widen(_mm256_maskz_loadu_epi16(m, row + j));
      if (bias != nullptr) v = Widen(Narrow(_mm512_add_ps(v, Widen(_mm256_maskz_loadu_epi16(m, bias + j)))));
      _mm256_mask_storeu_epi16(row + j, m, Narrow(Gelu16(v)));
    }
  }
}
#undef MODSERVE_AVX512_INLINE
#pragma GCC diagnostic pop

bool HasAvx512() {
  __builtin_cpu_init();
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return has;
}
#endif

}  // namespace

void GeluColumns(float* y, int64_t M, int64_t N, int64_t begin, int64_t end, const float* bias) {
#ifdef MODSERVE_X86
  if (HasAvx512()) return Avx512(y, M, N, begin, end, bias);
#endif
  Portable(y, M, N, begin, end, bias);
}

void GeluColumnsBf16(uint16_t* y, int64_t M, int64_t N, int64_t begin, int64_t end, const uint16_t* bias) {
#ifdef MODSERVE_X86
  if (HasAvx512()) return Avx512Bf16(y, M, N, begin, end, bias);
#endif
  Portable(y, M, N, begin, end, bias);
}

void GeluColumnsPortable(float* y, int64_t M, int64_t N, int64_t begin, int64_t end, const float* bias) {
  Portable(y, M, N, begin, end, bias);
}

void GeluColumnsPortableBf16(uint16_t* y, int64_t M, int64_t N, int64_t begin, int64_t end, const uint16_t* bias) {
  Portable(y, M, N, begin, end, bias);
}

}  // namespace modserve
