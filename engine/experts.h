// MixtureOfExperts: the MLP of a MoDE routed layer (model_config.h): an
// expert router (linear, one logit per choice) and E MLP experts of the dense
// MLP's shape; in "integrated" mode the router has one more choice, the
// no-op expert, whose tokens skip the MLP.
//
// Each token goes to its top_k choices (token choice, so decoding is causal);
// an assignment's output is scaled by the router's softmax probability of
// that choice, which keeps the router on the gradient path. Every expert runs
// as one matmul over exactly the rows sent to it.
//
// Training routing (apply_capacity) caps what an expert takes from one
// sequence at ceil(capacity_factor x its even share): in "staged", of the
// sequence's tokens that the depth router selected (share = n x top_k / E);
// in "integrated", of the sequence's tokens (share = capacity x n / E, so
// the no-op expert takes the rest). Assignments past the cap are dropped
// (those tokens skip the MLP), the earliest positions keep theirs. Sampling
// routing has no cap. A load-balancing loss pushes the router towards even
// use of the experts (Switch Transformer's E * sum f_e P_e) and, in
// "integrated", towards the configured no-op share (sum f_i P_i / t_i, with
// targets t = capacity / E per expert and 1 - capacity for no-op; both are
// minimal when the router's mean probabilities equal the targets).
//
// Thread-safety: as any torch::nn::Module.
#pragma once

#include <torch/torch.h>

#include "engine/model_config.h"

namespace modserve {

// What a mixture did in one forward pass, over its N routed rows (the valid
// rows of its input, in row-major order).
struct ExpertTrace {
  torch::Tensor logits;           // [N, C] float: router logits (C = ModelConfig::ExpertChoices())
  torch::Tensor choice;           // [N, k] int64: each row's top-k choices (integrated: C - 1 is no-op)
  torch::Tensor within_capacity;  // [N, k] bool: a real expert, within its capacity in the row's sequence
  torch::Tensor ran;              // [N, k] bool: the assignments this pass ran
  torch::Tensor group;            // [N] int64: the row's sequence (its row in the [B, T] input)
  torch::Tensor capacity;         // [B] int64: what one expert may take from each sequence
  torch::Tensor balance_loss;     // scalar
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
  // Runs the assignments `ran` [N, k] of rows h [N, d]: sum of prob x expert(h).
  torch::Tensor Combine(const torch::Tensor& h, const torch::Tensor& probs, const torch::Tensor& choice,
                        const torch::Tensor& ran, std::vector<int64_t>* rows_per_expert);

  int64_t n_experts_, choices_, top_k_;
  bool integrated_;
  double capacity_factor_, capacity_;
};
TORCH_MODULE(MixtureOfExperts);

}  // namespace modserve
