// Sampler: picks the next token from one row of logits: greedy (temperature
// 0), or temperature / top-k / top-p sampling driven by a per-request RNG, so
// the same seed gives the same tokens whatever else runs beside the request.
// Before picking it applies the request's penalties, as vLLM does and in its
// order: the repetition penalty (HF/CTRL style: a logit of a token seen in
// the prompt or the output so far is divided by it when positive, multiplied
// when not), then the frequency and presence penalties (OpenAI style: minus
// frequency_penalty per occurrence in the output so far, and
// presence_penalty once if it occurs there). The sampler counts the tokens it
// picks as that output.
//
// Thread-safety: a Sampler owns its RNG and counts; use one per request.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace modserve {

struct SamplingParams {
  double temperature = 0.0;         // 0: greedy
  int64_t top_k = 0;                // 0: no top-k cut
  double top_p = 1.0;               // 1: no nucleus cut
  uint64_t seed = 0;
  double repetition_penalty = 1.0;  // 1: none; > 1 discourages the prompt's and the output's tokens
  double presence_penalty = 0.0;    // 0: none; > 0 discourages, < 0 encourages the output's tokens
  double frequency_penalty = 0.0;   // 0: none; the same, per occurrence
};

class Sampler {
 public:
  // `prompt`: the request's prompt ids (only the repetition penalty reads it).
  explicit Sampler(const SamplingParams& p, const std::vector<int64_t>& prompt = {});
  // Picks a token from `logits` (one entry per vocabulary id) after the
  // penalties, and counts it as output.
  int64_t Sample(const std::vector<float>& logits);

 private:
  bool penalized() const;
  int64_t Pick(const std::vector<float>& logits);

  SamplingParams params_;
  std::mt19937_64 rng_;
  // Sized at the first penalized Sample (the vocabulary), then kept:
  std::vector<int64_t> prompt_;          // until then, when the repetition penalty is on
  std::vector<int32_t> counts_;          // per id, occurrences in the output
  std::vector<uint8_t> seen_;            // per id, 1 if in the prompt or the output
  std::vector<float> penalized_logits_;  // scratch: the row after the penalties
};

}  // namespace modserve
