// FewRowGemm: y = x · Wᵀ in f32 (or bf16) for a few rows of x, reading W once.
//
// A routed layer computes only ~capacity of the batch's tokens, so its
// projections multiply a handful of rows by a large weight matrix. A general
// GEMM (OpenBLAS here) packs the whole weight matrix into its own layout on
// every call, which at a few rows costs about as much as the multiply itself.
// This kernel instead streams each weight row once and multiplies it with all
// rows of x while it sits in cache, so at a few rows it runs at the speed of
// reading the weights from memory. It is plain C++ with AVX-512 and AVX2
// paths picked at run time and a portable fallback; it has no torch
// dependency, so its tests and callers choose how to split the work.
//
// Thread-safety: pure function of its arguments; callers may run disjoint
// output-column ranges [n_begin, n_end) on different threads at once.
#pragma once

#include <cstdint>

namespace modserve {

// The instruction sets FewRowGemm has a path for.
enum class GemmPath { kPortable, kAvx2, kAvx512 };

// x: [M, K] row-major; w: [N, K] row-major (a torch Linear weight);
// y: [M, N] row-major. Computes columns [n_begin, n_end) of y on the best
// path this CPU supports.
void FewRowGemm(const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y, int64_t n_begin, int64_t n_end);

// The same on a given path (tests compare every path the CPU supports).
void FewRowGemmOn(GemmPath path, const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y, int64_t n_begin,
                  int64_t n_end);

// The same for bf16 x, w and y (bf16 bits, [M, K], [N, K], [M, N]),
// accumulating in f32 and rounding y to nearest even. Only CPUs with
// AVX512-BF16 have it: where CpuHasBf16Dot() is false it computes nothing.
void FewRowGemmBf16(const uint16_t* x, int64_t M, const uint16_t* w, int64_t N, int64_t K, uint16_t* y, int64_t n_begin,
                    int64_t n_end);
bool CpuHasBf16Dot();

bool CpuSupports(GemmPath path);
GemmPath BestGemmPath();
const char* GemmPathName(GemmPath path);  // "avx512", "avx2" or "portable"

}  // namespace modserve
