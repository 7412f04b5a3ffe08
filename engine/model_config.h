// ModelConfig: the architecture, routing and tokenizer of a MoD checkpoint,
// as stored in a checkpoint's config.json.
//
// Routing off (routing.enabled = false) is the dense baseline: the same model
// code with every layer computing every token and no router or predictor.
//
// Mixture-of-Depths-and-Experts (the paper's MoDE), on the routed layers:
//   mode "mod"         a routed layer has a router and a predictor; the tokens
//                      it takes run attention and one MLP (plain MoD);
//   mode "staged"      as MoD, and the tokens a routed layer takes are then
//                      sent to moe.top_k of moe.experts MLP experts by an
//                      expert router (attention is skipped with the block);
//   mode "integrated"  a routed layer has one router over moe.experts MLP
//                      experts plus a no-op expert; every token runs its
//                      attention (so its K/V are dense), and tokens sent to
//                      the no-op expert skip the MLP. capacity is the share
//                      of tokens the real experts take in training.
//
// Thread-safety: a plain value type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/status.h"

namespace modserve {

struct ModelConfig {
  // Architecture.
  int64_t vocab_size = 258;  // 256 bytes + BOS + EOS
  int64_t n_layers = 6;
  int64_t d_model = 192;
  int64_t n_heads = 6;
  int64_t d_ff = 768;
  int64_t max_context = 256;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;

  // Routing (Mixture-of-Depths).
  bool routing_enabled = true;
  double capacity = 0.125;           // fraction of a sequence's tokens a routed layer takes in training
  std::vector<int64_t> routed_layers = {1, 3, 5};
  int64_t predictor_hidden = 64;     // width of the predictor MLP's hidden layer

  // MoDE (see above): "mod", "staged" or "integrated"; experts only in MoDE.
  std::string mode = "mod";
  int64_t moe_experts = 0;            // MLP experts per routed layer
  int64_t moe_top_k = 1;              // experts per token (staged; integrated takes 1)
  double moe_capacity_factor = 1.25;  // training: an expert takes at most this x its even share of a sequence's tokens
// Tokenizer (byte level).
  int64_t bos_id = 256;
  int64_t eos_id = 257;

  // Storage dtype of model.safetensors: "float32" or "bfloat16".
  std::string weights_dtype = "float32";

  // Free-form provenance written by the trainer (corpus, steps, seed, ...).
  nlohmann::json training = nlohmann::json::object();

  int64_t head_dim() const { return d_model / n_heads; }
  // A routing decision happens at this layer (a routed layer, routing on).
  bool IsRouted(int64_t layer) const;
  // Tokens can skip this layer whole, attention included, writing no K/V:
  // a routed layer in "mod" and "staged" mode.
  bool SkipsAttention(int64_t layer) const { return IsRouted(layer) && mode != "integrated"; }
  // The layer's MLP is a mixture of experts (a routed layer in MoDE).
  bool HasExperts(int64_t layer) const { return IsRouted(layer) && mode != "mod"; }
  // Expert router outputs: the experts, plus the no-op expert in "integrated".
  int64_t ExpertChoices() const { return moe_experts + (mode == "integrated" ? 1 : 0); }
  // Tokens a routed layer selects in a training sequence of `seq_len` tokens: ceil(C * S).
  int64_t TopK(int64_t seq_len) const;

  // Every other layer, starting at layer 1.
  static std::vector<int64_t> DefaultRoutedLayers(int64_t n_layers);

  // Checks ranges and consistency; the message names the offending key.
  Status Validate() const;

  nlohmann::json ToJson() const;
  // Parses and validates; `source` (a file name) prefixes error messages.
  static StatusOr<ModelConfig> FromJson(const nlohmann::json& j, const std::string& source);
};

}  // namespace modserve
