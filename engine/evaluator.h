// Evaluator: language-model quality and routing behaviour of a model on a text.
//
//   bits_per_byte        under predictor routing (how the server samples)
//   bits_per_byte_topk   under top-k routing (how the model was trained)
//   predictor_agreement  per routed layer: fraction of tokens where the
//                        predictor's decision equals top-k membership, in the
//                        top-k pass (the predictor's training target); in
//                        integrated MoDE, where the expert routing decides,
//                        its decision without capacity against with it
//   compute_fraction     per routed layer: fraction of tokens that compute it
//                        under predictor routing
//
// Every byte of the text is predicted exactly once, in windows of seq_len
// bytes that each start with BOS.
//
// Thread-safety: runs the model under NoGradGuard; do not train the same
// model concurrently.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/corpus.h"
#include "engine/mod_model.h"

namespace modserve {

struct EvalResult {
  int64_t bytes = 0;
  double bits_per_byte = 0;
  double bits_per_byte_topk = 0;
  std::vector<int64_t> routed_layers;
  std::vector<double> predictor_agreement;  // one per routed layer
  std::vector<double> compute_fraction;     // one per routed layer
  double mean_predictor_agreement = 1.0;
  double mean_compute_fraction = 1.0;

  nlohmann::json ToJson() const;
};

struct EvalOptions {
  int64_t seq_len = 256;     // bytes per window (<= max_context)
  int64_t batch = 16;        // windows per forward
  int64_t max_bytes = 0;     // evaluate only the first max_bytes bytes (0: all)
};

EvalResult Evaluate(MoDTransformer& model, const TokenCorpus& text, const EvalOptions& opts);

}  // namespace modserve
