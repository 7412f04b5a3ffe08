// DecodeAttention: attention of query rows over cached keys and values, read
// in place from the paged KV pools.
//
// Each query row attends over a list of cached slots: a decode token over
// its whole sequence, and row r of a prefill chunk over the chunk's cached
// keys up to itself (the same list, cut shorter), so one kernel serves both.
// The batched tensor version (paged_attention.cpp) gathers every sequence's
// K and V into padded copies and multiplies elementwise, moving each cached
// byte four or five times per layer; at batch 32 that was half of a dense
// layer's decode time. This kernel reads each cached K and V row once per
// query row, for f32 or bf16 caches on the CPU, always computing in f32, and
// has no torch dependency. A bf16 cache halves the bytes each step reads.
// The AVX-512 path (head_dim a multiple of 16) scores 16 keys at a time with
// one combined horizontal sum, takes exp a vector at a time, and keeps the
// weighted sum of values in registers; other CPUs run plain C++.
//
// Thread-safety: a pure function of its arguments; callers may run disjoint
// ranges of query rows on different threads at once.
#pragma once

#include <cstdint>

#include "engine/few_row_gemm.h"

namespace modserve {

// How the K and V pools store each number.
enum class KvElement { kF32, kBf16 };  // kBf16: the high 16 bits of an f32 (bfloat16)

struct DecodeAttentionArgs {
  const float* q = nullptr;          // [n, H, hd]: query row i
  const void* k_pool = nullptr;      // [slots, H, hd] of kv_element
  const void* v_pool = nullptr;      // [slots, H, hd] of kv_element
  KvElement kv_element = KvElement::kF32;
  const int64_t* slots = nullptr;    // row i's keys: slots[starts[i] .. starts[i] + lengths[i])
  const int64_t* starts = nullptr;   // [n]; rows may share slots
  const int64_t* lengths = nullptr;  // [n]; each at least 1
  int64_t heads = 0, head_dim = 0;
  float scale = 1.f;
  float* out = nullptr;              // [n, H, hd]
};

// Computes query rows [begin, end).
void DecodeAttention(const DecodeAttentionArgs& a, int64_t begin, int64_t end);
// The same on a given instruction-set path (tests compare every path).
void DecodeAttentionOn(GemmPath path, const DecodeAttentionArgs& a, int64_t begin, int64_t end);

}  // namespace modserve
