// modserve's CUDA kernels for the MoD-specific steps of a decode step:
// route compaction (predictor decisions -> index list), gather and
// scale/scatter-add of routed rows, and paged decode attention over ragged
// per-layer block tables. Host-callable wrappers over device pointers; the
// per-element indexing lives in kernel_indexing.h and is tested on the CPU.
//
// Every wrapper returns an error Status when CUDA reports one (including "no
// device"); none throws. Kernels run on the default stream and the wrappers
// synchronize before returning.
//
// Thread-safety: wrappers may be called from any thread; callers own the
// buffers and must not share output buffers between concurrent calls.
#pragma once

#include <cstdint>
#include <string>

#include "engine/status.h"

namespace modserve::kernels {

// True iff a CUDA device can be used (any CUDA error counts as "no").
bool CudaDeviceAvailable(std::string* why_not);

// out_idx[0..count) = indices i in [0, n) with flags[i] != 0, ascending; *count on the host.
Status CompactRoutes(const uint8_t* flags, int64_t n, int64_t* out_idx, int64_t* count);

// out [m, d] = x[idx[j]] for j < m.
Status GatherRows(const float* x, const int64_t* idx, int64_t m, int64_t d, float* out);

// x[idx[j]] += w[j] * delta[j] for j < m (idx distinct).
Status ScaleScatterAdd(float* x, const int64_t* idx, const float* w, const float* delta, int64_t m, int64_t d);

// One query per sequence: out[s, h] = softmax(q[s,h] . K[s,h,t] * scale) V[s,h,t]
// over t < lengths[s], where K/V rows come from pools [rows, H, hd] through
// block_tables [n, max_blocks] (block ids) and block_size.
Status PagedDecodeAttention(const float* q, const float* k_pool, const float* v_pool, const int32_t* block_tables,
                            const int32_t* lengths, int64_t n, int64_t n_heads, int64_t head_dim, int64_t block_size,
                            int64_t max_blocks, int64_t max_length, float scale, float* out);

}  // namespace modserve::kernels
