// Request validation: turns a GenerateRequest from the wire into a
// GenerationRequest for the scheduler, or an INVALID_ARGUMENT status whose
// message names the field and its allowed range.
//
// Thread-safety: pure functions, but for the context's guide cache, which is
// thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/status.h"
#include "modserve/v1/modserve.pb.h"
#include "server/generation_request.h"
#include "server/guide_cache.h"
#include "server/server_config.h"

namespace modserve {

// Most alternatives a request may ask for per generated token (top_logprobs):
// 20, as OpenAI's API allows, or the vocabulary size if that is smaller.
constexpr int64_t kMaxTopLogprobs = 20;
inline int64_t MaxTopLogprobs(int64_t vocab_size) { return vocab_size < kMaxTopLogprobs ? vocab_size : kMaxTopLogprobs; }
inline constexpr size_t kMaxCacheSaltBytes = 256;  // longest GenerateRequest.cache_salt
inline constexpr int64_t kMaxGuideBytes = 4096;     // longest guided_regex; guided_choice's bytes in all
inline constexpr int64_t kMaxGuideChoices = 64;     // most guided_choice entries
inline constexpr int64_t kMaxGuideJsonBytes = 16384;  // longest guided_json schema

// What validation needs to know about the served model.
struct ValidationContext {
  RequestLimits limits;
  int64_t max_context = 0;
  int64_t vocab_size = 0;
  int64_t bos_id = 256;
  int64_t eos_id = 257;
  bool priority_scheduling = false;  // scheduling_policy: priority (else a request's priority must be 0)
  std::shared_ptr<GuideCache> guide_cache;  // compiled guides kept across requests; null: each request compiles its own
};

// The kind of the request's guide, by the first of its guide fields that is
// set: "regex", "choice", "json", or "" for none (the request log's "guide").
std::string GuideKind(const v1::GenerateRequest& r);

// Whether `id` may be a request_id: 1 to 128 printable ASCII characters, no spaces.
bool IsValidRequestId(const std::string& id);

// OK if every entry of the repeated id field `field` is a token id of the
// vocabulary; else an INVALID_ARGUMENT naming the first that is not.
Status CheckTokenIds(const std::string& field, const google::protobuf::RepeatedField<int32_t>& ids, int64_t vocab_size);

// An upper bound on the serialized size in bytes of any GenerateRequest that
// validation accepts under `limits` for a vocabulary of `vocab_size` ids: the
// prompt (as text or as ids), max_stop stop strings of max_stop_bytes, a
// stop id and a logit_bias entry for every id, the longest guide (regex,
// choices or JSON Schema), and room for the other fields (request_id,
// cache_salt, the scalars). max_message_bytes must be at least
// this, or valid requests would be refused unread.
int64_t LargestValidRequestBytes(const RequestLimits& limits, int64_t vocab_size);

// `fallback_seed` is used when the request has no seed; `fallback_id` when it
// has no request_id.
StatusOr<GenerationRequest> ValidateGenerateRequest(const v1::GenerateRequest& r, const ValidationContext& ctx,
                                                    uint64_t fallback_seed, const std::string& fallback_id);

}  // namespace modserve
