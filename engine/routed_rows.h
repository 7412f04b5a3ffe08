// The per-token work of a routed layer around its block, for one engine step:
// scoring every token of the batch (the router weight r = w · x, and the
// predictor's compute-or-skip decision) and adding the computing tokens'
// block output, scaled by r, back into the residual stream.
//
// At decode a step holds a few dozen tokens, so these were a dozen small
// torch ops (router, norm, fc1, bias, GELU, fc2, bias, compare; gather,
// scale, index_add, each with its temporaries), which cost more in dispatch
// than in arithmetic. On f32 and bf16 CPU tensors at inference the router
// and fc2 (one output column each) run on the few-row GEMM on the calling
// thread, the norm on the fused kernel, fc1 with its bias and GELU applied to
// each chunk of columns as it is computed, and the scatter-add as one loop
// over the computing rows in place; elsewhere (CUDA, training, more rows
// than the few-row GEMM takes, and scoring in bf16 without the CPU's bf16 dot
// product) they run the model's torch code. The arithmetic is the model's own
// forward's; in bf16 the loops round wherever a torch op of that forward would.
//
// Thread-safety: as the engine step that calls them: x is updated in place.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "engine/mod_model.h"

namespace modserve {

struct RoutedTokens {
  std::vector<float> router;       // [N] r = router(x) per token
  std::vector<uint8_t> computes;   // [N] 1 where the predictor's logit > 0
  std::vector<int64_t> rows;       // the computing rows, ascending
};

// The rows where mask [N] (bool, on any device) is set, ascending.
std::vector<int64_t> RowsWhere(const torch::Tensor& mask);

// Scores the N rows of x [N, d] at `block`, which must have a router and a predictor.
RoutedTokens ScoreRoutedTokens(BlockImpl& block, const torch::Tensor& x);

// x[rows[i]] += r[rows[i]] * delta[i] for the M computing rows: x [N, d]
// (contiguous, updated in place), delta [M, d]. Returns x.
torch::Tensor AddRoutedDelta(torch::Tensor x, const RoutedTokens& t, const torch::Tensor& delta);

}  // namespace modserve
