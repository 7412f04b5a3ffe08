// GenerationState: one request's generated tokens and when to stop: EOS,
// max tokens, a stop token id, or a stop string (which may span several
// tokens). The text of the completion never includes a stop token or EOS
// (the tokens stay in tokens()), nor the stop string unless
// StopCriteria::include_stop says so. Neither EOS nor a stop token nor
// a stop string ends it within its first min_tokens tokens (a stop string
// completed there stays in the text, as in vLLM V1), except an EOS or stop
// token the sampler had to let through there (Add's `ends_early`: a guide
// that is fully matched leaves nothing else). It remembers which stop
// string or stop token ended it.
//
// StableLength() tells a streaming caller how many bytes of text() can be
// sent: the bytes that can no longer turn out to be the start of a stop
// string (all of them with include_stop: none would be cut).
//
// Thread-safety: a plain value; one per request.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace modserve {

enum class FinishReason { kNone, kLength, kEos, kStop };
const char* FinishReasonName(FinishReason r);  // "none", "length", "eos", "stop"

struct StopCriteria {
  int64_t max_tokens = 16;
  int64_t eos_id = 257;  // -1: EOS does not end generation (ignore_eos); it adds no text
  std::vector<std::string> stop;  // non-empty strings
  int64_t min_tokens = 0;         // tokens before EOS or a stop string may end generation
  std::vector<int64_t> stop_token_ids{};  // ids that end generation (kStop); they add no text
  bool include_stop = false;              // a matched stop string stays in the text
};

class GenerationState {
 public:
  explicit GenerationState(StopCriteria criteria) : criteria_(std::move(criteria)) {}

  // Records one sampled token; returns why generation is finished (kNone: go
  // on). `ends_early`: EOS or a stop token ends generation even within
  // min_tokens (Sampler::released_hold).
  FinishReason Add(int64_t token, bool ends_early = false);

  // Ends generation for a reason found outside (e.g. the context is full).
  void ForceFinish(FinishReason r) {
    if (finish_ == FinishReason::kNone) finish_ = r;
  }
  FinishReason finish_reason() const { return finish_; }
  bool finished() const { return finish_ != FinishReason::kNone; }
  const std::vector<int64_t>& tokens() const { return tokens_; }
  const std::string& text() const { return text_; }
  size_t StableLength() const;
  // What ended a kStop generation: the index in StopCriteria::stop of the
  // stop string, or the stop token id; -1 for the other.
  int64_t matched_stop() const { return matched_stop_; }
  int64_t matched_stop_token() const { return matched_stop_token_; }

 private:
  StopCriteria criteria_;
  std::vector<int64_t> tokens_;
  std::string text_;
  FinishReason finish_ = FinishReason::kNone;
  int64_t matched_stop_ = -1;
  int64_t matched_stop_token_ = -1;
};

}  // namespace modserve
