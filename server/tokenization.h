// Tokenization: the work of the Tokenize and Detokenize RPCs, without the
// model: text to the token ids Generate reads for a prompt, and ids to the
// text Generate writes for a completion. Bad input is an INVALID_ARGUMENT
// naming the field and its allowed range.
//
// Thread-safety: pure functions.
#pragma once

#include "engine/status.h"
#include "modserve/v1/modserve.pb.h"
#include "server/request_validation.h"

namespace modserve {

// `r.text` must be valid UTF-8 (request_decoding.h checks the wire bytes) and
// at most ctx.limits.max_prompt_bytes bytes.
StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& r, const ValidationContext& ctx);
// Every id must be in [0, ctx.vocab_size).
StatusOr<v1::DetokenizeResponse> Detokenize(const v1::DetokenizeRequest& r, const ValidationContext& ctx);

}  // namespace modserve
