// MixtureOfExperts: the MLP of a MoDE routed layer (model_config.h): an
// expert router (linear, one logit per choice) and E MLP experts of the dense
// MLP's shape; in "integrated" mode the router has one more choice, the
// no-op expert, whose tokens skip the MLP. An assignment's output is scaled
// by the router's softmax probability of that expert, which keeps the router
// on the gradient path; every expert runs as one matmul over exactly the rows
// assigned to it.
//
// Sampling routing (causal, no capacity): each token goes to its top_k
// choices; a token whose choice is the no-op expert runs no MLP.
//
// Training routing (apply_capacity):
//   "staged"      token choice as in sampling, but an expert takes at most
//                 ceil(capacity_factor x n x top_k / E) of the n tokens of a
//                 sequence that reached the layer, earliest first; the rest
//                 of its assignments are dropped. A Switch-Transformer
//                 load-balancing loss (E x sum_e f_e P_e) keeps use even.
//   "integrated"  expert choice, as MoD's top-k: each expert takes the
//                 ceil(capacity x S / E) tokens of a sequence it gives the
//                 highest probability, so exactly `capacity` of the tokens
//                 run an expert, whatever the router prefers. Sampling
//                 cannot see the whole sequence, so a routing loss teaches
//                 the router, from stopgrad input, its training assignment
//                 (the expert that took the token, else the no-op): the role
//                 MoD's predictor plays. (Token choice with a capacity cap
//                 collapses here: a router that learns to pick the no-op
//                 trains itself to pick it more.)
//
// Thread-safety: as any torch::nn::Module.
#pragma once

#include <torch/torch.h>

#include "engine/model_config.h"

namespace modserve {

// What a mixture did in one forward pass, over its N routed rows (the valid
// rows of its input, in row-major order).
struct ExpertTrace {
  torch::Tensor logits;        // [N, C] float: router logits (C = ModelConfig::ExpertChoices())
  torch::Tensor choice;        // [N, k] int64: each row's top-k choices, the sampling routing (integrated: C - 1 is no-op)
  torch::Tensor train_assign;  // [N, E] bool: the training routing's assignments
  torch::Tensor ran;           // [N, E] bool: the assignments this pass ran
  torch::Tensor group;         // [N] int64: the row's sequence (its row in the [B, T] input)
  torch::Tensor capacity;      // [B] int64: what one expert may take from each sequence in training
  torch::Tensor balance_loss;  // scalar ("staged")
  torch::Tensor route_loss;    // scalar ("integrated"): reaches only the router
};

class ExpertImpl : public torch::nn::Module {
 public:
  ExpertImpl(int64_t d_model, int64_t d_ff);
  torch::Tensor forward(const torch::Tensor& h);  // [M, d] -> [M, d]
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Expert);

class MixtureOfExpertsImpl : public torch::nn::Module {
 public:
  explicit MixtureOfExpertsImpl(const ModelConfig& cfg);

  // h: [B, T, d] normalized MLP input; valid: [B, T] bool rows to route (the
  // others get 0). Returns [B, T, d]. With apply_capacity the training
  // routing runs, else the sampling routing. `trace` may be null.
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& valid, bool apply_capacity, ExpertTrace* trace);

  // The engine's path: every row of h [M, d] routed without capacity.
  // Returns [M, d]; rows_per_expert (size E) gets the rows each expert ran,
  // ran_mask (if not null) [M] bool: rows that ran at least one expert.
  torch::Tensor Route(const torch::Tensor& h, std::vector<int64_t>* rows_per_expert, torch::Tensor* ran_mask);

  torch::nn::Linear router{nullptr};
  torch::nn::ModuleList experts{nullptr};

 private:
  // Runs the assignments `assign` [N, E] of rows h [N, d]: sum of prob x expert(h).
  torch::Tensor Combine(const torch::Tensor& h, const torch::Tensor& probs, const torch::Tensor& assign,
                        std::vector<int64_t>* rows_per_expert);
  // [N, E] bool: the assignments of token-choice routing `choice` [N, k].
  torch::Tensor Assignments(const torch::Tensor& choice) const;

  int64_t n_experts_, choices_, top_k_;
  bool integrated_;
  double capacity_factor_, capacity_;
};
TORCH_MODULE(MixtureOfExperts);

}  // namespace modserve
