// AVX-512 helpers shared by the torch-free kernels (decode attention, GELU):
// ExpNonPositive, e^x for 16 floats x <= 0 (the softmax, erf), and
// FirstLanes, the mask of a 16-lane tail. Include only from x86-64 GCC/Clang
// translation units; the functions carry their own target attribute, so
// callers need not be built with -mavx512f, but must only call them where the
// CPU has AVX-512F.
//
// Thread-safety: a pure function.
#pragma once

#include <cstdint>

#include <immintrin.h>

namespace modserve {

// x = n ln2 + r with |r| <= ln2/2, e^r by its degree-6 Taylor polynomial
// (relative error below 2e-7), times 2^n. Below -87 it returns e^-87 rather
// than underflowing.
__attribute__((target("avx512f"), always_inline)) inline __m512 ExpNonPositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln2 in two parts, so r stays exact
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// The first min(n, 16) lanes.
__attribute__((target("avx512f"), always_inline)) inline __mmask16 FirstLanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

}  // namespace modserve
