// Fused f32 (and bf16) row kernels for the decode step's small per-layer
// operations: RMS normalization and rotary position embedding (RoPE).
//
// At decode a layer's activations are a few rows, so each torch elementwise
// op costs more in dispatch and temporaries than in arithmetic: the torch
// RMSNorm is six ops and the torch RoPE about fifteen per call. These kernels
// do each in one pass over the rows, with the same float arithmetic as the
// torch versions in mod_model.cpp (statistics in f32; RoPE's cos/sin taken
// from a table the caller builds with the model's own RoPE formula), so
// results agree to float rounding. The bf16 versions read and write bf16
// bits, compute in f32 and round once (torch's bf16 ops round after each op,
// so they agree to bf16 rounding). Plain C++, no torch dependency.
//
// Thread-safety: pure functions of their arguments; callers may run disjoint
// row ranges on different threads.
#pragma once

#include <cstdint>

namespace modserve {

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for rows [0, rows).
// x, out: [rows, dim] row-major (may alias); weight: [dim], or null for 1.
void RmsNormRows(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out);
void RmsNormRowsBf16(const uint16_t* x, int64_t rows, int64_t dim, const uint16_t* weight, float eps, uint16_t* out);

// Rotates `heads` vectors of head_dim floats in each of `rows` rows in place,
// row r at position positions[r]: with half = head_dim / 2, the pair
// (x[i], x[i + half]) becomes (x[i]·cos - x[i+half]·sin, x[i]·sin + x[i+half]·cos)
// where cos, sin = cos_table, sin_table[positions[r] * half + i].
// x: row r's first head at x + r * row_stride; heads contiguous within a row.
void RopeRowsInPlace(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int64_t* positions,
                     const float* cos_table, const float* sin_table);
void RopeRowsInPlaceBf16(uint16_t* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int64_t* positions,
                         const float* cos_table, const float* sin_table);

}  // namespace modserve
