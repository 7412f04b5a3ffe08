#include "server/tokenization.h"

#include <string>
#include <vector>

#include "engine/tokenizer.h"
#include "server/utf8_stream.h"

namespace modserve {

StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& r, const ValidationContext& ctx) {
  const int64_t bytes = static_cast<int64_t>(r.text().size());
  if (bytes > ctx.limits.max_prompt_bytes) {
    return InvalidArgument("text is " + std::to_string(bytes) + " bytes; the limit is max_prompt_bytes = " +
                           std::to_string(ctx.limits.max_prompt_bytes));
  }
  if (!IsValidUtf8(r.text())) return InvalidArgument("text is not valid UTF-8");
  const std::vector<int64_t> ids = ByteTokenizer(ctx.bos_id, ctx.eos_id).Encode(r.text(), r.add_bos());
  v1::TokenizeResponse out;
  out.mutable_token_ids()->Reserve(static_cast<int>(ids.size()));
  for (int64_t id : ids) out.add_token_ids(static_cast<int32_t>(id));
  out.set_prompt_tokens(static_cast<int32_t>(bytes + 1));  // + BOS, as usage.prompt_tokens counts
  return out;
}

StatusOr<v1::DetokenizeResponse> Detokenize(const v1::DetokenizeRequest& r, const ValidationContext& ctx) {
  MODSERVE_RETURN_IF_ERROR(CheckTokenIds("token_ids", r.token_ids(), ctx.vocab_size));
  const std::vector<int64_t> ids(r.token_ids().begin(), r.token_ids().end());
  Utf8StreamDecoder utf8;
  std::string text = utf8.Push(ByteTokenizer(ctx.bos_id, ctx.eos_id).Decode(ids));
  text += utf8.Flush();  // a character cut off at the end
  v1::DetokenizeResponse out;
  out.set_text(std::move(text));
  return out;
}

}  // namespace modserve
