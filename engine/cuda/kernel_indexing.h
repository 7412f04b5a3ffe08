// Indexing logic shared by the CUDA kernels and their CPU tests: each
// function is what one GPU thread does for one element, written so that the
// host compiler builds it too (MODSERVE_HD is empty outside nvcc).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MODSERVE_HD __host__ __device__
#else
#define MODSERVE_HD
#endif

namespace modserve::kernels {

// Row of the K/V pool holding token t of a (sequence, layer) whose block
// table is `table` (block ids), with `block_size` tokens per block.
MODSERVE_HD inline int64_t PagedSlot(const int32_t* table, int64_t t, int64_t block_size) {
  return static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size;
}

// Route compaction: token i with decision flag and exclusive prefix count
// `before` (computing tokens ahead of it) writes its index to out[before].
MODSERVE_HD inline void CompactWrite(int64_t i, uint8_t flag, int64_t before, int64_t* out) {
  if (flag) out[before] = i;
}

// Gather of routed rows: element c of compact row j comes from row idx[j] of x [n, d].
MODSERVE_HD inline void GatherElement(const float* x, const int64_t* idx, int64_t j, int64_t c, int64_t d, float* out) {
  out[j * d + c] = x[idx[j] * d + c];
}

// Scale and scatter-add: residual row idx[j] gains w[j] * delta[j] (idx holds
// distinct rows, so no two threads write the same element).
MODSERVE_HD inline void ScatterAddElement(float* x, const int64_t* idx, const float* w, const float* delta, int64_t j, int64_t c,
                                          int64_t d) {
  x[idx[j] * d + c] += w[j] * delta[j * d + c];
}

}  // namespace modserve::kernels
