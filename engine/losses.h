// The MoD training losses over one forward pass (DESIGN §1):
//   lm          next-byte cross-entropy (nats per byte), the only loss that
//               reaches the trunk and the routers;
//   predictor   BCE of each routed layer's predictor logit against top-k
//               membership; the predictor reads stopgrad(x), so this loss
//               reaches only predictor weights (integrated MoDE: the expert
//               router's cross-entropy against its capacity-limited
//               assignment, also from stopgrad input: experts.h);
//   router_aux  optional BCE of the router logits against top-k membership
//               (the paper's other causal-sampling option);
//   balance     MoDE: the expert routers' load-balancing loss (experts.h),
//               averaged over routed layers.
//
// Thread-safety: pure functions.
#pragma once

#include <torch/torch.h>

#include "engine/mod_model.h"

namespace modserve {

struct LossWeights {
  double predictor = 1.0;
  double router_aux = 0.0;
  double balance = 0.01;
};

struct Losses {
  torch::Tensor lm;         // scalar
  torch::Tensor predictor;  // scalar (0 without routed layers)
  torch::Tensor router_aux; // scalar
  torch::Tensor balance;    // scalar (0 without experts)
  torch::Tensor total;      // lm + weights
};

// targets: [B, S] int64 next tokens for out.logits [B, S, V].
Losses ComputeLosses(const ForwardOutput& out, const torch::Tensor& targets, const LossWeights& w);

}  // namespace modserve
