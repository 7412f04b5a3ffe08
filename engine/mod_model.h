// MoDTransformer: the Mixture-of-Depths decoder-only transformer (DESIGN §1),
// as a LibTorch module used by the trainer, the evaluator and the reference
// full-sequence forward.
//
// Pre-norm blocks (RMSNorm), RoPE, causal self-attention and a GELU MLP. A
// routed layer has a router (linear -> one scalar r per token) and a predictor
// MLP that reads stopgrad(x). In MoDE (model_config.h) a routed layer's MLP
// is a mixture of experts (experts.h): in "staged" mode behind the same depth
// routing, in "integrated" mode with every token attending and the experts'
// router (with its no-op expert) as the layer's only routing. Tokens that compute a routed layer are gathered
// into a compact [B, K, d] matrix, keep their real positions for RoPE and
// causality, attend only among themselves, and add r * f(x) back into the
// residual stream; the others pass through unchanged.
//
// Routing modes of a forward pass:
//   kTopK       exactly k = ceil(C*S) tokens per sequence with the largest r
//               (training; non-causal, needs the whole sequence);
//   kPredictor  a token computes iff its predictor logit > 0 (causal; how the
//               server samples).
// With routing disabled in the config every layer computes every token: the
// dense baseline, same code.
//
// Thread-safety: a module is not safe for concurrent mutation (training);
// concurrent Forward() calls under torch::NoGradGuard are safe.
#pragma once

#include <utility>
#include <vector>

#include <torch/torch.h>

#include "engine/experts.h"
#include "engine/model_config.h"

namespace modserve {

enum class RouteMode { kTopK, kPredictor };

// What one routed layer did in a forward pass. Tensors are [B, S]. In
// "integrated" mode "computing" means running an MLP expert (not the no-op),
// there is no router weight r or predictor, and the training decision is the
// expert routing under capacity.
struct RoutedLayerTrace {
  int64_t layer = 0;
  torch::Tensor router_logits;     // [B, S] float, r = w . x (undefined in "integrated")
  torch::Tensor predictor_logits;  // [B, S] float, from stopgrad(x) (undefined in "integrated")
  torch::Tensor topk_mask;         // [B, S] bool, the training decision: top-k membership (the predictor's target)
  torch::Tensor causal_selected;   // [B, S] bool, the decision causal sampling makes (predictor > 0)
  torch::Tensor selected;          // [B, S] bool, tokens that computed the block in this pass
  ExpertTrace experts;             // MoDE: the mixture's routing (over the tokens that reached it)
};

struct ForwardOutput {
  torch::Tensor logits;                  // [B, S, vocab]
  std::vector<RoutedLayerTrace> routed;  // one per routed layer, in layer order
};

// Indices of the selected tokens of each row, in increasing position order,
// padded to the largest count in the batch. `selected` is [B, S] bool.
struct Compaction {
  torch::Tensor index;  // [B, K] int64 positions (padding rows repeat a valid index or 0)
  torch::Tensor valid;  // [B, K] bool
  int64_t max_count = 0;
};
Compaction CompactSelected(const torch::Tensor& selected);

// Rotary position embedding of x [B, H, T, hd] at integer positions [B, T].
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& positions, double theta);

// The rotation angles' cos and sin that ApplyRope uses at integer positions
// [...]: each [..., head_dim / 2] float32.
std::pair<torch::Tensor, torch::Tensor> RopeCosSin(const torch::Tensor& positions, int64_t head_dim, double theta);

// x / rms(x) over the last dimension, with the statistics in float32; keeps x's dtype.
// At inference on f32 CPU tensors this and RMSNorm run one fused pass
// (engine/row_norm_rope.h) instead of six torch ops.
torch::Tensor RmsNormalize(const torch::Tensor& x, double eps);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// The predictor MLP: rmsnorm(x) -> fc1 -> GELU -> fc2 -> one logit per token.
class PredictorImpl : public torch::nn::Module {
 public:
  PredictorImpl(int64_t d_model, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x);  // [..., d] -> [...]
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Predictor);

// One transformer block (layer `layer` of `cfg`): `router` and `predictor`
// exist on layers tokens can skip (SkipsAttention), `moe` replaces fc1/fc2 on
// MoDE layers (HasExperts).
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelConfig& cfg, int64_t layer);
  // f(x): the block's residual update (attention + MLP) for tokens x [B, T, d]
  // at positions [B, T]; key_valid [B, T] bool marks real (non-padding)
  // tokens. A mixture of experts routes with capacity when
  // `expert_capacity`, and records into `trace` (may be null).
  torch::Tensor Delta(const torch::Tensor& x, const torch::Tensor& positions, const torch::Tensor& key_valid,
                      bool expert_capacity = false, ExpertTrace* trace = nullptr);
  // The pieces of Delta, shared with the engine step: Qkv maps x [..., d] to
  // un-rotated q, k, v [..., 3, H, hd]; Attend maps the attention heads
  // [..., H, hd] to the attention update a [..., d] (x_shape is x's shape);
  // DenseMlp maps x + a [..., d] to the dense MLP's update (MoDE layers run
  // moe on mlp_norm(x + a) instead).
  torch::Tensor Qkv(const torch::Tensor& x);
  torch::Tensor Attend(const torch::Tensor& heads, c10::IntArrayRef x_shape);
  torch::Tensor DenseMlp(const torch::Tensor& x_plus_attn);

  RMSNorm attn_norm{nullptr}, mlp_norm{nullptr};
  torch::nn::Linear wqkv{nullptr}, wo{nullptr}, fc1{nullptr}, fc2{nullptr};
  torch::nn::Linear router{nullptr};
  Predictor predictor{nullptr};
  MixtureOfExperts moe{nullptr};

 private:
  int64_t n_heads_, head_dim_;
  double rope_theta_;
};
TORCH_MODULE(Block);

class MoDTransformerImpl : public torch::nn::Module {
 public:
  explicit MoDTransformerImpl(const ModelConfig& cfg);

  // tokens: [B, S] int64 with S <= max_context. Returns logits and routing traces.
  ForwardOutput Forward(const torch::Tensor& tokens, RouteMode mode);

  const ModelConfig& config() const { return cfg_; }
  // Replaces the free-form provenance that SaveCheckpoint writes into config.json.
  void set_training_provenance(const nlohmann::json& p) { cfg_.training = p; }

  // Forward FLOPs per token (multiply-adds x 2) of the matmuls, for a sequence
  // of `seq_len` tokens where routed layers compute `compute_fraction` of them.
  static double ForwardFlopsPerToken(const ModelConfig& cfg, int64_t seq_len, double compute_fraction);
  // Elements of all parameters a model built from `cfg` holds, computed from
  // the config alone (no allocation): LoadCheckpoint compares it with the
  // file before it builds the model. A double, since a bad config can ask for
  // more than int64 holds.
  static double ParameterCount(const ModelConfig& cfg);

  torch::nn::Embedding tok_emb{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm final_norm{nullptr};
  torch::nn::Linear lm_head{nullptr};

 private:
  void InitWeights();
  ModelConfig cfg_;
};
TORCH_MODULE(MoDTransformer);

}  // namespace modserve
