#include "engine/few_row_gemm.h"

#include "engine/bf16_bits.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MODSERVE_X86 1
#endif

namespace modserve {

namespace {

// One pass multiplies kW weight rows with up to kX rows of x over all of K:
// kW x kX accumulators stay in registers, every loaded weight vector is used
// kX times and every loaded x vector kW times.
constexpr int64_t kW = 4;
constexpr int64_t kX = 4;

// While a tile multiplies weight rows [n0, n0 + kW), it prefetches into L2
// the rows kPrefetchTiles blocks further on, 256 bytes per step of K, so that
// a block's bytes are all requested by the time the tile before it ends. At
// a few rows of x the kernel is bound by reading the weights, and the
// hardware prefetchers alone, which stop at every 4 KiB page, leave a third
// of the memory bandwidth unused. Into L2, not L1: L1 holds the rows of x.
constexpr int64_t kPrefetchTiles = 2;
constexpr int kPrefetchBytesPerStep = 256;
constexpr int64_t kFloatBytes = sizeof(float);

// out[i * out_stride + j] = dot(x row i, weight row j) for i < MB, j < NB.
template <int NB, int MB>
void PortableTile(const float* x, const float* w, int64_t K, float* out, int64_t out_stride, const char* /*prefetch*/) {
  for (int i = 0; i < MB; ++i) {
    for (int j = 0; j < NB; ++j) {
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += x[i * K + k] * w[j * K + k];
      out[i * out_stride + j] = s;
    }
  }
}

#ifdef MODSERVE_X86
// GCC 12's AVX-512 shuffle and reduce intrinsics start from
// _mm512_undefined_ps(), which its own -Wuninitialized flags in every caller.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The general MB x NB tile for one vector width: plain vector loads over
// whole vectors of K, a scalar tail, one horizontal sum per accumulator. A
// macro, not a template: each copy must be compiled inside a function with its
// own target attribute for the intrinsics to inline (as in decode_attention).
// `prefetch` (may be null): the block of weights to request meanwhile.
#define MODSERVE_GEMM_TILE(VEC, LANES, ZERO, LOAD, FMADD, STORE)                \
  do {                                                                          \
    VEC acc[MB][NB];                                                            \
    _Pragma("GCC unroll 16") for (int i = 0; i < MB; ++i)                       \
      _Pragma("GCC unroll 16") for (int j = 0; j < NB; ++j) acc[i][j] = ZERO(); \
    int64_t k = 0;                                                              \
    for (; k + (LANES) <= K; k += (LANES)) {                                    \
      if (prefetch != nullptr) PrefetchStep(prefetch, k * kW * kFloatBytes, kW * (LANES) * kFloatBytes); \
      VEC wv[NB];                                                               \
      _Pragma("GCC unroll 16") for (int j = 0; j < NB; ++j) wv[j] = LOAD(w + j * K + k); \
      _Pragma("GCC unroll 16") for (int i = 0; i < MB; ++i) {                   \
        const VEC xv = LOAD(x + i * K + k);                                     \
        _Pragma("GCC unroll 16") for (int j = 0; j < NB; ++j) acc[i][j] = FMADD(wv[j], xv, acc[i][j]); \
      }                                                                         \
    }                                                                           \
    for (int i = 0; i < MB; ++i) {                                              \
      for (int j = 0; j < NB; ++j) {                                            \
        alignas(sizeof(VEC)) float lanes[LANES];                                \
        STORE(lanes, acc[i][j]);                                                \
        float s = 0.f;                                                          \
        for (float v : lanes) s += v;                                           \
        for (int64_t t = k; t < K; ++t) s += x[i * K + t] * w[j * K + t];       \
        out[i * out_stride + j] = s;                                            \
      }                                                                         \
    }                                                                           \
  } while (false)

// Requests bytes [offset, offset + bytes) of `block` into L2.
inline void PrefetchStep(const char* block, int64_t offset, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(block + offset + b, _MM_HINT_T1);
}

template <int NB, int MB>
__attribute__((target("avx512f"))) void Avx512Tile(const float* x, const float* w, int64_t K, float* out, int64_t out_stride,
                                                   const char* prefetch) {
  MODSERVE_GEMM_TILE(__m512, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_store_ps);
}

// Sums of 16 accumulators acc[4 * i + j] (x row i, weight row j) into one
// vector whose element 4 * j + i is the sum of acc[4 * i + j]: 15 adds and
// 30 shuffles instead of 16 separate horizontal reductions, which at small K
// cost as much as the multiply.
__attribute__((target("avx512f"), always_inline)) inline __m512 Reduce16(const __m512* acc) {
  __m512 r[8], t[4];
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) {  // r[k] 128-bit lanes: A0+A2, A1+A3, B0+B2, B1+B3 for A, B = acc[2k], acc[2k+1]
    r[k] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * k], acc[2 * k + 1], 0x44), _mm512_shuffle_f32x4(acc[2 * k], acc[2 * k + 1], 0xEE));
  }
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m) {  // t[m] lane l: four partial sums of acc[4m + l]
    t[m] = _mm512_add_ps(_mm512_shuffle_f32x4(r[2 * m], r[2 * m + 1], 0x88), _mm512_shuffle_f32x4(r[2 * m], r[2 * m + 1], 0xDD));
  }
  const __m512 pq = _mm512_add_ps(_mm512_unpacklo_ps(t[0], t[1]), _mm512_unpackhi_ps(t[0], t[1]));
  const __m512 rs = _mm512_add_ps(_mm512_unpacklo_ps(t[2], t[3]), _mm512_unpackhi_ps(t[2], t[3]));
  // Lane l, element e: the sum of acc[4e + l].
  return _mm512_add_ps(_mm512_shuffle_ps(pq, rs, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(pq, rs, _MM_SHUFFLE(3, 2, 3, 2)));
}

// The full 4 x 4 tile: masked loads for the K tail, one combined reduction.
template <>
__attribute__((target("avx512f"))) void Avx512Tile<4, 4>(const float* x, const float* w, int64_t K, float* out, int64_t out_stride,
                                                         const char* prefetch) {
  __m512 acc[16];
#pragma GCC unroll 16
  for (auto& a : acc) a = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    if (prefetch != nullptr) PrefetchStep(prefetch, k * 4 * kFloatBytes, kPrefetchBytesPerStep);
    const __mmask16 mask = K - k >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 wv[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) wv[j] = _mm512_maskz_loadu_ps(mask, w + j * K + k);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + i * K + k);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[4 * i + j] = _mm512_fmadd_ps(wv[j], xv, acc[4 * i + j]);
    }
  }
  alignas(64) float sums[16];
  _mm512_store_ps(sums, Reduce16(acc));
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) out[i * out_stride + j] = sums[4 * j + i];
}

template <int NB, int MB>
__attribute__((target("avx2,fma"))) void Avx2Tile(const float* x, const float* w, int64_t K, float* out, int64_t out_stride,
                                                  const char* prefetch) {
  MODSERVE_GEMM_TILE(__m256, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_store_ps);
}

// bf16 x and w, 32 numbers of K per step: vdpbf16ps multiplies pairs of bf16
// and adds them to f32 accumulators, so each loaded vector is used NB or MB
// times as in the f32 tile. Masked loads take the K tail. Results are
// rounded to bf16 (to nearest even, as torch rounds).
template <int NB, int MB>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void Bf16Tile(const uint16_t* x, const uint16_t* w, int64_t K, uint16_t* out,
                                                                     int64_t out_stride, const char* prefetch) {
  __m512 acc[16];
#pragma GCC unroll 16
  for (auto& a : acc) a = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 32) {
    if (prefetch != nullptr) PrefetchStep(prefetch, k * 4 * static_cast<int64_t>(sizeof(uint16_t)), kPrefetchBytesPerStep);
    const __mmask32 mask = K - k >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((uint32_t{1} << (K - k)) - 1);
    __m512bh wv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) wv[j] = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, w + j * K + k));
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) {
      const auto xv = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, x + i * K + k));
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[4 * i + j] = _mm512_dpbf16_ps(acc[4 * i + j], wv[j], xv);
    }
  }
  alignas(64) float sums[16];
  _mm512_store_ps(sums, Reduce16(acc));  // unused accumulators stay zero
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) out[i * out_stride + j] = FloatToBf16(sums[4 * j + i]);
}
#pragma GCC diagnostic pop
#endif

using Path = GemmPath;

// The f32 tiles of a path and the bf16 tiles, as Tiles<NB, MB>::Get(path).
template <int NB, int MB>
struct F32Tiles {
  static void (*Get(Path path))(const float*, const float*, int64_t, float*, int64_t, const char*) {
#ifdef MODSERVE_X86
    if (path == Path::kAvx512) return &Avx512Tile<NB, MB>;
    if (path == Path::kAvx2) return &Avx2Tile<NB, MB>;
#endif
    (void)path;
    return &PortableTile<NB, MB>;
  }
};

#ifdef MODSERVE_X86
template <int NB, int MB>
struct Bf16Tiles {
  static void (*Get(Path))(const uint16_t*, const uint16_t*, int64_t, uint16_t*, int64_t, const char*) { return &Bf16Tile<NB, MB>; }
};
#endif

// Tile for a block of NB <= kW weight rows and mb <= kX rows of x.
template <template <int, int> class Tiles, int NB>
auto TileForRows(Path path, int64_t mb) {
  switch (mb) {
    case 1: return Tiles<NB, 1>::Get(path);
    case 2: return Tiles<NB, 2>::Get(path);
    case 3: return Tiles<NB, 3>::Get(path);
    default: return Tiles<NB, 4>::Get(path);
  }
}

template <template <int, int> class Tiles>
auto PickTile(Path path, int64_t nb, int64_t mb) {
  switch (nb) {
    case 1: return TileForRows<Tiles, 1>(path, mb);
    case 2: return TileForRows<Tiles, 2>(path, mb);
    case 3: return TileForRows<Tiles, 3>(path, mb);
    default: return TileForRows<Tiles, 4>(path, mb);
  }
}

template <template <int, int> class Tiles, typename T, typename Out>
void Run(Path path, const T* x, int64_t M, const T* w, int64_t N, int64_t K, Out* y, int64_t n_begin, int64_t n_end) {
  // Each block of kW weight rows is read from memory once; the later blocks
  // of x find it in cache. The first tile of a block prefetches the block
  // kPrefetchTiles further on, if it is in the range.
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kW) {
    const int64_t nb = n_end - n0 < kW ? n_end - n0 : kW;
    const int64_t ahead = n0 + kPrefetchTiles * kW;
    const char* prefetch = ahead + kW <= n_end ? reinterpret_cast<const char*>(w + ahead * K) : nullptr;
    for (int64_t m0 = 0; m0 < M; m0 += kX) {
      const int64_t mb = M - m0 < kX ? M - m0 : kX;
      PickTile<Tiles>(path, nb, mb)(x + m0 * K, w + n0 * K, K, y + m0 * N + n0, N, m0 == 0 ? prefetch : nullptr);
    }
  }
}

}  // namespace

bool CpuSupports(GemmPath path) {
#ifdef MODSERVE_X86
  __builtin_cpu_init();
  if (path == GemmPath::kAvx512) return __builtin_cpu_supports("avx512f");
  if (path == GemmPath::kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return path == GemmPath::kPortable;
}

GemmPath BestGemmPath() {
  static const GemmPath best = CpuSupports(GemmPath::kAvx512) ? GemmPath::kAvx512
                               : CpuSupports(GemmPath::kAvx2) ? GemmPath::kAvx2
                                                              : GemmPath::kPortable;
  return best;
}

const char* GemmPathName(GemmPath path) {
  switch (path) {
    case GemmPath::kAvx512: return "avx512";
    case GemmPath::kAvx2: return "avx2";
    default: return "portable";
  }
}

void FewRowGemm(const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y, int64_t n_begin, int64_t n_end) {
  Run<F32Tiles>(BestGemmPath(), x, M, w, N, K, y, n_begin, n_end);
}

void FewRowGemmOn(GemmPath path, const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y, int64_t n_begin,
                  int64_t n_end) {
  Run<F32Tiles>(path, x, M, w, N, K, y, n_begin, n_end);
}

bool CpuHasBf16Dot() {
#ifdef MODSERVE_X86
  __builtin_cpu_init();
  static const bool has = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
  return has;
#else
  return false;
#endif
}

void FewRowGemmBf16(const uint16_t* x, int64_t M, const uint16_t* w, int64_t N, int64_t K, uint16_t* y, int64_t n_begin,
                    int64_t n_end) {
#ifdef MODSERVE_X86
  if (CpuHasBf16Dot()) return Run<Bf16Tiles>(GemmPath::kAvx512, x, M, w, N, K, y, n_begin, n_end);
#endif
  (void)x, (void)M, (void)w, (void)N, (void)K, (void)y, (void)n_begin, (void)n_end;
}

}  // namespace modserve
