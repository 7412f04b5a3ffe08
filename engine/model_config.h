// ModelConfig: the architecture, routing and tokenizer of a MoD checkpoint,
// as stored in a checkpoint's config.json.
//
// Routing off (routing.enabled = false) is the dense baseline: the same model
// code with every layer computing every token and no router or predictor.
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

  // Tokenizer (byte level).
  int64_t bos_id = 256;
  int64_t eos_id = 257;

  // Storage dtype of model.safetensors: "float32" or "bfloat16".
  std::string weights_dtype = "float32";

  // Free-form provenance written by the trainer (corpus, steps, seed, ...).
  nlohmann::json training = nlohmann::json::object();

  int64_t head_dim() const { return d_model / n_heads; }
  bool IsRouted(int64_t layer) const;
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
