// PagedAttention: causal attention of a layer's computing tokens over each
// sequence's cached K/V at that layer (the sparse paged KV cache).
//
// The new tokens' K/V must already be written to the cache. On an f32 or bf16
// CPU cache every query row, decode token or prefill row, reads the cache in
// place (decode_attention.h). CUDA caches run decode chunks (one new token) as
// padded batched attention and prefill chunks one sequence at a time with
// torch ops. Scores, softmax and the weighted sum are float32 whatever the
// cache's dtype. Query i of a chunk sees the chunk's cached keys before it
// plus new keys up to itself.
//
// Thread-safety: reads the cache; run from the engine's step loop.
#pragma once

#include <vector>

#include <torch/torch.h>

#include "engine/kv_cache.h"

namespace modserve {

struct AttentionChunk {
  SeqId id = 0;
  int64_t row = 0;   // first row of this chunk's queries in q
  int64_t count = 0; // new computing tokens of the chunk at this layer
  int64_t prev = 0;  // tokens cached at this layer before this step
};

// q: [M, H, hd] (rotated); returns [M, H, hd].
torch::Tensor PagedAttention(const KvCache& kv, int64_t layer, const torch::Tensor& q, const std::vector<AttentionChunk>& chunks);

// The path CUDA caches take (padded batches of decode chunks, torch ops per
// prefill chunk), on any cache: tests compare it with the in-place kernel.
torch::Tensor PagedAttentionWithTorchOps(const KvCache& kv, int64_t layer, const torch::Tensor& q,
                                         const std::vector<AttentionChunk>& chunks);

}  // namespace modserve
