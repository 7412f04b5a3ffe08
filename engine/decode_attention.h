// DecodeAttention: attention of one new query token per sequence over that
// sequence's cached keys and values, read in place from the paged KV pools.
//
// The batched tensor version (paged_attention.cpp) gathers every sequence's
// K and V into padded copies and multiplies elementwise, moving each cached
// byte four or five times per layer; at batch 32 that was half of a dense
// layer's decode time. This kernel reads each cached K and V row once, for
// f32 or bf16 caches on the CPU (AVX-512 where the CPU has it and head_dim is
// a multiple of 16, plain C++ otherwise), always computing in f32, and has no
// torch dependency. A bf16 cache halves the bytes each step reads.
//
// Thread-safety: a pure function of its arguments; callers may run disjoint
// ranges of (sequence, head) pairs on different threads at once.
#pragma once

#include <cstdint>

#include "engine/few_row_gemm.h"

namespace modserve {

// How the K and V pools store each number.
enum class KvElement { kF32, kBf16 };  // kBf16: the high 16 bits of an f32 (bfloat16)

struct DecodeAttentionArgs {
  const float* q = nullptr;          // [n, H, hd]: sequence i's query token
  const void* k_pool = nullptr;      // [slots, H, hd] of kv_element
  const void* v_pool = nullptr;      // [slots, H, hd] of kv_element
  KvElement kv_element = KvElement::kF32;
  const int64_t* slots = nullptr;    // sequence i's cached slots: slots[offsets[i] .. offsets[i + 1])
  const int64_t* offsets = nullptr;  // [n + 1]; every sequence has at least one slot
  int64_t heads = 0, head_dim = 0;
  float scale = 1.f;
  float* out = nullptr;              // [n, H, hd]
};

// Computes sequences [begin, end).
void DecodeAttention(const DecodeAttentionArgs& a, int64_t begin, int64_t end);
// The same on a given instruction-set path (tests compare every path).
void DecodeAttentionOn(GemmPath path, const DecodeAttentionArgs& a, int64_t begin, int64_t end);

}  // namespace modserve
