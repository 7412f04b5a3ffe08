// ReferenceGenerate: text generation by full recomputation (one whole forward
// over the prompt and everything generated so far for every new token) with
// predictor routing. Slow but obviously correct: the reference that the
// batched, KV-cached engine step is checked against.
//
// Thread-safety: runs the model under NoGradGuard; see MoDTransformer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/mod_model.h"
#include "engine/sampler.h"

namespace modserve {

struct ReferenceGeneration {
  std::vector<int64_t> tokens;  // generated ids (an EOS, if produced, is the last)
  bool hit_eos = false;
};

// prompt: token ids (usually BOS + bytes). Keeps the last max_context tokens as context.
ReferenceGeneration ReferenceGenerate(MoDTransformer& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                                      const SamplingParams& sampling);

}  // namespace modserve
