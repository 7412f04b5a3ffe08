// GenerationRequest / RequestUpdate: what the scheduler takes in and gives
// back for one request, free of gRPC and of the model. The service turns a
// validated GenerateRequest into a GenerationRequest and RequestUpdates into
// GenerateResponses.
//
// Thread-safety: plain values.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/generation_state.h"
#include "engine/sampler.h"
#include "engine/status.h"
#include "engine/token_logprobs.h"

namespace modserve {

using Clock = std::chrono::steady_clock;

struct GenerationRequest {
  std::string request_id;
  std::vector<int64_t> prompt;  // token ids, BOS included
  SamplingParams sampling;
  StopCriteria stop;
  bool return_routes = false;
  bool return_logprobs = false;
  int64_t top_logprobs = 0;  // alternatives per token, with return_logprobs or return_prompt_logprobs
  bool return_prompt_logprobs = false;
  std::string cache_salt;  // prefix caching: shares cached K/V only with requests of the same salt
  int32_t priority = 0;    // lower: served first (Scheduler)
  Clock::time_point deadline = Clock::time_point::max();
};

struct LayerUsage {
  int64_t layer = 0;
  int64_t computed = 0;
  int64_t skipped = 0;
};

struct RequestUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  // Prompt tokens whose K/V came from the prefix cache at the admission of
  // the request's first step that applied: the engine did not run them for it.
  int64_t cached_prompt_tokens = 0;
  // Per routed layer, over every token the engine processed for the request
  // (counted from the per-token routes, once per token even if recomputed
  // after a preemption; cached prompt tokens are not among them).
  std::vector<LayerUsage> layers;
  int64_t routed_computed() const;
  int64_t routed_skipped() const;
};

// One message to the client: the new tokens and text since the last update.
struct RequestUpdate {
  std::string text;                // valid UTF-8, safe to send (no stop-string prefix pending)
  std::vector<int64_t> token_ids;  // new generated tokens
  // Per new token, when asked: bit i set iff the forward pass that produced
  // the token (over the previous token) computed the i-th routed layer.
  std::vector<uint64_t> routes;
  // Per new token, when asked: its log-probability and the top alternatives.
  std::vector<TokenLogprobs> logprobs;
  // When asked, on the update with the first generated token: one per
  // prompt token after BOS, the log-probability given the tokens before it.
  std::vector<TokenLogprobs> prompt_logprobs;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;  // when finished with an OK status
  // With kStop: the stop string that ended the request (empty if none), or
  // the stop token id (-1 if none).
  std::string stop_string;
  int64_t stop_token_id = -1;
  Status status;                   // when finished: OK, or why the request failed
  RequestUsage usage;              // when finished
};

// Receives a request's updates, in order, on the scheduler's step thread; the
// last one has finished = true. Must not block.
using UpdateSink = std::function<void(RequestUpdate)>;

}  // namespace modserve
