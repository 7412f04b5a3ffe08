// Sampler: picks the next token from one row of logits: greedy (temperature
// 0), or temperature / top-k / min-p / top-p sampling driven by a per-request
// RNG, so the same seed gives the same tokens whatever else runs beside the
// request. Sampling keeps the top_k most likely ids, then those at least
// min_p times as likely as the most likely one, then the smallest head of
// those whose (renormalized) mass reaches top_p, and draws from what is left.
// Before picking it processes the row as vLLM does and in its order: while
// fewer than min_tokens tokens have been picked, the end-of-sequence id and
// the stop token ids can not be picked; the logit biases are added; then the penalties: the
// repetition penalty (HF/CTRL style: a logit of a token seen in
// the prompt or the output so far is divided by it when positive, multiplied
// when not), then the frequency and presence penalties (OpenAI style: minus
// frequency_penalty per occurrence in the output so far, and
// presence_penalty once if it occurs there). The sampler counts the tokens it
// picks as that output. With a guide (token_guide.h: guided decoding), only
// the ids that keep the output a possible match of the guide's pattern can
// be picked, and `guide_eos_id` only where the output is a full match; this
// mask comes first, and min_tokens then holds EOS and the stop ids back only
// while the guide leaves some other id (a complete match with nothing more
// to add ends even within min_tokens).
//
// Thread-safety: a Sampler owns its RNG and counts; use one per request.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "engine/token_guide.h"

namespace modserve {

struct SamplingParams {
  double temperature = 0.0;         // 0: greedy
  int64_t top_k = 0;                // 0: no top-k cut
  double top_p = 1.0;               // 1: no nucleus cut
  double min_p = 0.0;               // 0: no cut; else drop ids less likely than min_p x the most likely
  uint64_t seed = 0;
  double repetition_penalty = 1.0;  // 1: none; > 1 discourages the prompt's and the output's tokens
  double presence_penalty = 0.0;    // 0: none; > 0 discourages, < 0 encourages the output's tokens
  double frequency_penalty = 0.0;   // 0: none; the same, per occurrence
  int64_t min_tokens = 0;           // picks before `eos_id` may be picked
  int64_t eos_id = -1;              // an id min_tokens holds back (-1: none)
  std::vector<int64_t> stop_token_ids;  // more ids min_tokens holds back
  // (id, bias) pairs added to the logits; ids outside the row are ignored.
  std::vector<std::pair<int64_t, float>> logit_bias;
  // Guided decoding: the output must stay in the guide's language (null:
  // unguided). Byte ids follow the guide's moves; guide_eos_id is allowed
  // where the output is a full match; every other id never.
  std::shared_ptr<const TokenGuide> guide;
  int64_t guide_eos_id = -1;
};

class Sampler {
 public:
  // `prompt`: the request's prompt ids (only the repetition penalty reads it).
  explicit Sampler(const SamplingParams& p, const std::vector<int64_t>& prompt = {});
  // Picks a token from `logits` (one entry per vocabulary id) after the
  // processing above, and counts it as output.
  int64_t Sample(const std::vector<float>& logits);
  // Whether the last Sample was within min_tokens and the guide left only
  // EOS or stop ids to pick: the id it picked ends generation all the same
  // (GenerationState::Add's `ends_early`).
  bool released_hold() const { return released_hold_; }

 private:
  bool penalized() const;
  int64_t Pick(const std::vector<float>& logits);
  // Sets the ids the guide does not allow now to -inf in `l`.
  void MaskByGuide(std::vector<float>& l) const;
  // Moves the guide (if any) past the picked `token`; returns it.
  int64_t Advance(int64_t token);
  // Whether `l` leaves an id other than EOS and the stop ids.
  bool OthersRemain(const std::vector<float>& l) const;

  SamplingParams params_;
  std::mt19937_64 rng_;
  int64_t picked_ = 0;                   // tokens sampled so far
  bool released_hold_ = false;
  int32_t guide_state_ = TokenGuide::kStart;  // with a guide: its state after the output so far
  // Sized at the first penalized Sample (the vocabulary), then kept:
  std::vector<int64_t> prompt_;          // until then, when the repetition penalty is on
  std::vector<int32_t> counts_;          // per id, occurrences in the output
  std::vector<uint8_t> seen_;            // per id, 1 if in the prompt or the output
  std::vector<float> processed_logits_;  // scratch: the row after the processing
};

}  // namespace modserve
