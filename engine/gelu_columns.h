// GeluColumns: the exact GELU, gelu(v) = v/2 · (1 + erf(v/√2)), applied in
// place to a range of columns of a row-major matrix, after adding a bias.
//
// A projection's output chunk is still in cache right after the few-row GEMM
// computes it (engine/few_row_linear.h), so the MLP's and the predictor's
// GELU run there, on the kernel threads, instead of as a separate torch op
// over the whole output on LibTorch's threads. The AVX-512 path computes erf
// as torch's vectorized CPU kernel does (Abramowitz-Stegun 7.1.26, absolute
// error below 1.5e-7) with a polynomial exp; elsewhere it is std::erf. The
// bf16 version reads and writes bf16 bits and rounds where torch's bf16 ops
// would: once after the bias, once after GELU. Plain C++, no torch dependency.
//
// Thread-safety: pure functions of their arguments; callers may run disjoint
// column ranges on different threads.
#pragma once

#include <cstdint>

namespace modserve {

// y[i * N + j] = gelu(y[i * N + j] + bias[j]) for i < M, j in [begin, end).
// bias: [N], or null for none.
void GeluColumns(float* y, int64_t M, int64_t N, int64_t begin, int64_t end, const float* bias);
void GeluColumnsBf16(uint16_t* y, int64_t M, int64_t N, int64_t begin, int64_t end, const uint16_t* bias);

// The same on the portable path (tests compare the two).
void GeluColumnsPortable(float* y, int64_t M, int64_t N, int64_t begin, int64_t end, const float* bias);
void GeluColumnsPortableBf16(uint16_t* y, int64_t M, int64_t N, int64_t begin, int64_t end, const uint16_t* bias);

}  // namespace modserve
