// TokenLogprobs: how likely the model found a generated token, and the most
// likely alternatives, from the row of logits the token was sampled from.
//
// Log-probabilities are under the model's own distribution: the log-softmax
// of the raw logits, before penalties, temperature, top-k and top-p (so
// greedy and sampled requests report the same numbers for the same context,
// as vLLM V1 does by default). Computed in double, reported as float.
//
// Thread-safety: a pure function of its arguments.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace modserve {

struct TokenLogprob {
  int64_t token = 0;
  float logprob = 0.f;  // <= 0; -inf where the logit is -inf
};

struct TokenLogprobs {
  TokenLogprob chosen;            // the generated token
  std::vector<TokenLogprob> top;  // the `top_n` most likely ids, most likely first (ties: lower id first)
};

// `logits` has one entry per vocabulary id, not all -inf (a NaN counts as
// -inf); 0 <= token < logits.size(); top_n below 0 means 0, above the
// vocabulary size means all of it.
TokenLogprobs ComputeTokenLogprobs(const float* logits, size_t vocab, int64_t token, int64_t top_n);
inline TokenLogprobs ComputeTokenLogprobs(const std::vector<float>& logits, int64_t token, int64_t top_n) {
  return ComputeTokenLogprobs(logits.data(), logits.size(), token, top_n);
}

}  // namespace modserve
