#include "server/request_validation.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "engine/json_schema_regex.h"
#include "engine/token_guide.h"
#include "engine/tokenizer.h"
#include "server/utf8_stream.h"

namespace modserve {
namespace {

// A float field's value as the client sent it: the shortest text that reads
// back as the same float (0.1, 2.5, 1e-10, 100.00001, nan, inf).
std::string Num(float v) {
  char buf[64];
  const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  return std::string(buf, end);
}

}  // namespace

Status CheckTokenIds(const std::string& field, const google::protobuf::RepeatedField<int32_t>& ids, int64_t vocab_size) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return InvalidArgument(field + "[" + std::to_string(i) + "] is " + std::to_string(ids[i]) + "; ids must be in [0, " +
                             std::to_string(vocab_size - 1) + "]");
    }
  }
  return Status::Ok();
}

namespace {

// Bytes of `v` (>= 0) as a protobuf varint.
int64_t VarintBytes(int64_t v) {
  int64_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// OK unless `bytes` is over `limit`: then "<subject><bytes><unit>; the limit is <limit>".
Status CheckGuideBytes(const std::string& subject, int64_t bytes, int64_t limit, const std::string& unit = " bytes") {
  if (bytes <= limit) return Status::Ok();
  return InvalidArgument(subject + std::to_string(bytes) + unit + "; the limit is " + std::to_string(limit));
}

// compile()'s guide, through `cache` (kept under `key`) if there is one.
StatusOr<std::shared_ptr<const TokenGuide>> CompileGuide(GuideCache* cache, const std::string& key,
                                                         const GuideCache::Compile& compile) {
  return cache != nullptr ? cache->GetOrCompile(key, compile) : compile();
}

// The request's guide (guided_regex, guided_choice or guided_json), compiled
// (or found in `cache`, if not null); null if it has none.
StatusOr<std::shared_ptr<const TokenGuide>> ValidateGuide(const v1::GenerateRequest& r, GuideCache* cache) {
  const bool by_regex = !r.guided_regex().empty(), by_choice = r.guided_choice_size() > 0, by_json = !r.guided_json().empty();
  if (by_regex + by_choice + by_json > 1) {
    std::string set;
    for (const auto& [on, name] : {std::pair{by_regex, "guided_regex"}, {by_choice, "guided_choice"}, {by_json, "guided_json"}}) {
      if (on) set += std::string(set.empty() ? "" : " and ") + name;
    }
    return InvalidArgument(set + " are set; a request may have one guide");
  }
  if (!by_regex && !by_choice && !by_json) return std::shared_ptr<const TokenGuide>();
  if (r.ignore_eos()) {
    return InvalidArgument("guided_" + GuideKind(r) +
                           " can not be combined with ignore_eos: a guided completion ends with EOS once it matches");
  }
  if (by_json) {
    MODSERVE_RETURN_IF_ERROR(CheckGuideBytes("guided_json is ", static_cast<int64_t>(r.guided_json().size()), kMaxGuideJsonBytes));
    return CompileGuide(cache, "json\n" + r.guided_json(), [&r]() -> StatusOr<std::shared_ptr<const TokenGuide>> {
      auto regex = JsonSchemaRegex(r.guided_json(), "guided_json");
      if (!regex.ok()) return regex.status();
      return TokenGuide::FromRegex(*regex, "guided_json", kJsonSchemaSizeHint);
    });
  }
  if (by_regex) {
    MODSERVE_RETURN_IF_ERROR(CheckGuideBytes("guided_regex is ", static_cast<int64_t>(r.guided_regex().size()), kMaxGuideBytes));
    if (!IsValidUtf8(r.guided_regex())) return InvalidArgument("guided_regex is not valid UTF-8");
    return CompileGuide(cache, "regex\n" + r.guided_regex(), [&r] { return TokenGuide::FromRegex(r.guided_regex(), "guided_regex"); });
  }
  if (r.guided_choice_size() > kMaxGuideChoices) {
    return InvalidArgument("guided_choice has " + std::to_string(r.guided_choice_size()) + " entries; at most " +
                           std::to_string(kMaxGuideChoices) + " are allowed");
  }
  int64_t bytes = 0;
  std::string key = "choice\n";  // each choice as <length>:<bytes>
  for (int i = 0; i < r.guided_choice_size(); ++i) {
    const std::string name = "guided_choice[" + std::to_string(i) + "]";
    if (r.guided_choice(i).empty()) return InvalidArgument(name + " must not be empty");
    if (!IsValidUtf8(r.guided_choice(i))) return InvalidArgument(name + " is not valid UTF-8");
    bytes += static_cast<int64_t>(r.guided_choice(i).size());
    key += std::to_string(r.guided_choice(i).size()) + ":" + r.guided_choice(i);
  }
  MODSERVE_RETURN_IF_ERROR(CheckGuideBytes("guided_choice has ", bytes, kMaxGuideBytes, " bytes in all"));
  return CompileGuide(cache, key, [&r] {
    return TokenGuide::FromChoices({r.guided_choice().begin(), r.guided_choice().end()}, "guided_choice");
  });
}

}  // namespace

int64_t LargestValidRequestBytes(const RequestLimits& limits, int64_t vocab_size) {
  const int64_t id = VarintBytes(vocab_size - 1);  // the largest token id
  // A length-delimited field: its tag, its length and `payload` bytes.
  auto field = [](int64_t payload) { return 2 + VarintBytes(payload) + payload; };
  const int64_t prompt = std::max(field(limits.max_prompt_bytes), field(limits.max_prompt_bytes * id));  // text or ids
  const int64_t stops = limits.max_stop * field(limits.max_stop_bytes);
  const int64_t stop_ids = field(vocab_size * id);          // packed
  const int64_t logit_bias = vocab_size * field(1 + id + 1 + 4);  // an entry: key (tag, id), value (tag, float)
  const int64_t guide =  // a regex, choices or a schema
      std::max({field(kMaxGuideBytes), kMaxGuideChoices * field(0) + kMaxGuideBytes, field(kMaxGuideJsonBytes)});
  const int64_t rest = field(128) + field(static_cast<int64_t>(kMaxCacheSaltBytes)) + 256;  // request_id, cache_salt, scalars
  return prompt + stops + stop_ids + logit_bias + guide + rest;
}

std::string GuideKind(const v1::GenerateRequest& r) {
  if (!r.guided_regex().empty()) return "regex";
  if (r.guided_choice_size() > 0) return "choice";
  if (!r.guided_json().empty()) return "json";
  return "";
}

bool IsValidRequestId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char ch) { return ch >= 0x21 && ch <= 0x7e; });
}

StatusOr<GenerationRequest> ValidateGenerateRequest(const v1::GenerateRequest& r, const ValidationContext& ctx,
                                                    uint64_t fallback_seed, const std::string& fallback_id) {
  const RequestLimits& lim = ctx.limits;
  const bool by_ids = r.prompt_token_ids_size() > 0;
  if (by_ids && !r.prompt().empty()) {
    return InvalidArgument("prompt and prompt_token_ids are both set; send the prompt one way only");
  }
  if (!by_ids && r.prompt().empty()) return InvalidArgument("prompt must not be empty (or send prompt_token_ids)");
  // The prompt's length in tokens before BOS, and how to name it.
  const int64_t prompt_len = by_ids ? r.prompt_token_ids_size() : static_cast<int64_t>(r.prompt().size());
  const std::string unit = by_ids ? " ids" : " bytes";
  const std::string field = by_ids ? "prompt_token_ids" : "prompt";
  if (prompt_len > lim.max_prompt_bytes) {
    return InvalidArgument(field + " is " + std::to_string(prompt_len) + unit + "; the limit is max_prompt_bytes = " +
                           std::to_string(lim.max_prompt_bytes));
  }
  if (!by_ids && !IsValidUtf8(r.prompt())) return InvalidArgument("prompt is not valid UTF-8");
  MODSERVE_RETURN_IF_ERROR(CheckTokenIds("prompt_token_ids", r.prompt_token_ids(), ctx.vocab_size));
  // truncate_prompt_tokens: a longer prompt keeps only its last `kept` tokens.
  int64_t kept = prompt_len;
  if (r.has_truncate_prompt_tokens()) {
    const int64_t k = r.truncate_prompt_tokens();
    if (k < 1 || k > ctx.max_context - 2) {
      return InvalidArgument("truncate_prompt_tokens must be in [1, " + std::to_string(ctx.max_context - 2) +
                             "] (the context length " + std::to_string(ctx.max_context) +
                             " less BOS and one generated token), got " + std::to_string(k));
    }
    kept = std::min(prompt_len, k);
  }
  const int64_t prompt_tokens = kept + 1;  // + BOS
  if (prompt_tokens >= ctx.max_context) {
    return InvalidArgument(field + " is " + std::to_string(prompt_tokens) + " tokens (" + std::to_string(prompt_len) +
                           unit + " + BOS) but the model's context length is " + std::to_string(ctx.max_context) +
                           " tokens; a prompt may have at most " + std::to_string(ctx.max_context - 2) + unit +
                           " to leave room for one generated token (or set truncate_prompt_tokens to keep its last ones)");
  }
  const int64_t room = ctx.max_context - prompt_tokens;
  int64_t max_tokens = r.max_tokens();
  if (max_tokens < 0 || max_tokens > lim.max_tokens) {
    return InvalidArgument("max_tokens must be in [0, " + std::to_string(lim.max_tokens) + "] (0: the default " +
                           std::to_string(lim.default_max_tokens) + "), got " + std::to_string(max_tokens));
  }
  if (max_tokens == 0) {
    max_tokens = std::min(lim.default_max_tokens, room);
  } else if (max_tokens > room) {
    return InvalidArgument("max_tokens " + std::to_string(max_tokens) + " plus the prompt's " + std::to_string(prompt_tokens) +
                           " tokens exceeds the context length " + std::to_string(ctx.max_context) + "; at most " +
                           std::to_string(room) + " tokens can be generated for this prompt");
  }
  if (!std::isfinite(r.temperature()) || r.temperature() < 0 || r.temperature() > 2) {
    return InvalidArgument("temperature must be in [0, 2] (0: greedy), got " + Num(r.temperature()));
  }
  if (!std::isfinite(r.top_p()) || r.top_p() < 0 || r.top_p() > 1) {
    return InvalidArgument("top_p must be in (0, 1] (0: unset, meaning 1), got " + Num(r.top_p()));
  }
  if (!std::isfinite(r.min_p()) || r.min_p() < 0 || r.min_p() > 1) {
    return InvalidArgument("min_p must be in [0, 1] (0: no cut), got " + Num(r.min_p()));
  }
  if (r.top_k() < 0 || r.top_k() > ctx.vocab_size) {
    return InvalidArgument("top_k must be in [0, " + std::to_string(ctx.vocab_size) + "] (0: no cut), got " +
                           std::to_string(r.top_k()));
  }
  const float rep = r.repetition_penalty();
  if (!std::isfinite(rep) || (rep != 0 && (rep < 0.01f || rep > 10))) {
    return InvalidArgument("repetition_penalty must be in [0.01, 10], or 0 (unset, meaning 1, no penalty), got " +
                           Num(rep));
  }
  for (const auto& [name, value] : {std::pair{"presence_penalty", r.presence_penalty()},
                                    std::pair{"frequency_penalty", r.frequency_penalty()}}) {
    if (!std::isfinite(value) || std::fabs(value) > 2) {
      return InvalidArgument(std::string(name) + " must be in [-2, 2], got " + Num(value));
    }
  }
  if (r.min_tokens() < 0 || r.min_tokens() > max_tokens) {
    return InvalidArgument("min_tokens must be in [0, max_tokens = " + std::to_string(max_tokens) +
                           (r.max_tokens() == 0 ? " (the default for this prompt)" : "") + "], got " +
                           std::to_string(r.min_tokens()));
  }
  std::vector<std::pair<int64_t, float>> bias_by_id(r.logit_bias().begin(), r.logit_bias().end());
  std::sort(bias_by_id.begin(), bias_by_id.end());  // a map's order is unspecified: report the lowest bad id
  for (const auto& [id, bias] : bias_by_id) {
    if (id < 0 || id >= ctx.vocab_size) {
      return InvalidArgument("logit_bias has token id " + std::to_string(id) + "; ids must be in [0, " +
                             std::to_string(ctx.vocab_size - 1) + "]");
    }
    if (!std::isfinite(bias) || std::fabs(bias) > 100) {
      return InvalidArgument("logit_bias[" + std::to_string(id) + "] must be in [-100, 100], got " + Num(bias));
    }
  }
  if (r.stop_size() > lim.max_stop) {
    return InvalidArgument("stop has " + std::to_string(r.stop_size()) + " strings; at most max_stop = " +
                           std::to_string(lim.max_stop) + " are allowed");
  }
  for (int i = 0; i < r.stop_size(); ++i) {
    const std::string& s = r.stop(i);
    const std::string name = "stop[" + std::to_string(i) + "]";
    if (s.empty()) return InvalidArgument(name + " must not be empty");
    if (static_cast<int64_t>(s.size()) > lim.max_stop_bytes) {
      return InvalidArgument(name + " is " + std::to_string(s.size()) + " bytes; the limit is max_stop_bytes = " +
                             std::to_string(lim.max_stop_bytes));
    }
    if (!IsValidUtf8(s)) return InvalidArgument(name + " is not valid UTF-8");
  }
  if (r.stop_token_ids_size() > ctx.vocab_size) {
    return InvalidArgument("stop_token_ids has " + std::to_string(r.stop_token_ids_size()) +
                           " entries; at most the vocabulary size " + std::to_string(ctx.vocab_size) + " are allowed");
  }
  MODSERVE_RETURN_IF_ERROR(CheckTokenIds("stop_token_ids", r.stop_token_ids(), ctx.vocab_size));
  const int64_t max_top = MaxTopLogprobs(ctx.vocab_size);
  if (r.top_logprobs() < 0 || r.top_logprobs() > max_top) {
    return InvalidArgument("top_logprobs must be in [0, " + std::to_string(max_top) + "], got " +
                           std::to_string(r.top_logprobs()));
  }
  if (r.top_logprobs() > 0 && !r.return_logprobs() && !r.return_prompt_logprobs()) {
    return InvalidArgument("top_logprobs is " + std::to_string(r.top_logprobs()) +
                           " but return_logprobs and return_prompt_logprobs are false; set one to get logprobs");
  }
  if (r.has_request_id()) {
    const std::string& id = r.request_id();
    if (id.empty() || id.size() > 128) {
      return InvalidArgument("request_id must be 1 to 128 characters, got " + std::to_string(id.size()));
    }
    if (!IsValidRequestId(id)) {
      const auto bad = std::find_if(id.begin(), id.end(), [](char ch) { return ch < 0x21 || ch > 0x7e; });
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(*bad));
      return InvalidArgument("request_id must be printable ASCII without spaces (bytes 0x21 to 0x7E); byte " +
                             std::to_string(bad - id.begin()) + " is " + hex);
    }
  }
  if (r.cache_salt().size() > kMaxCacheSaltBytes) {
    return InvalidArgument("cache_salt is " + std::to_string(r.cache_salt().size()) + " bytes; the limit is " +
                           std::to_string(kMaxCacheSaltBytes));
  }
  if (r.n() < 0 || r.n() > lim.max_n) {
    return InvalidArgument("n must be in [0, " + std::to_string(lim.max_n) + "] (0: one completion), got " +
                           std::to_string(r.n()));
  }
  if (r.priority() != 0 && !ctx.priority_scheduling) {
    return InvalidArgument("priority is " + std::to_string(r.priority()) +
                           " but the server runs scheduling_policy: fcfs, where it must be 0");
  }

  auto guide = ValidateGuide(r, ctx.guide_cache.get());
  if (!guide.ok()) return guide.status();

  GenerationRequest g;
  g.request_id = r.has_request_id() ? r.request_id() : fallback_id;
  g.cache_salt = r.cache_salt();
  g.priority = r.priority();
  if (by_ids) {
    g.prompt.reserve(static_cast<size_t>(prompt_tokens));
    g.prompt.push_back(ctx.bos_id);
    g.prompt.insert(g.prompt.end(), r.prompt_token_ids().begin() + (prompt_len - kept), r.prompt_token_ids().end());
  } else {
    g.prompt = ByteTokenizer(ctx.bos_id, ctx.eos_id).Encode(std::string_view(r.prompt()).substr(prompt_len - kept),
                                                             /*add_bos=*/true);
  }
  g.sampling.temperature = r.temperature();
  g.sampling.top_k = r.top_k();
  g.sampling.top_p = r.top_p() == 0 ? 1.0 : r.top_p();
  g.sampling.min_p = r.min_p();
  g.sampling.seed = r.has_seed() ? r.seed() : fallback_seed;
  g.sampling.repetition_penalty = r.repetition_penalty() == 0 ? 1.0 : r.repetition_penalty();
  g.sampling.presence_penalty = r.presence_penalty();
  g.sampling.frequency_penalty = r.frequency_penalty();
  const int64_t ending_eos = r.ignore_eos() ? -1 : ctx.eos_id;  // the EOS that ends the request (and min_tokens holds back)
  g.sampling.min_tokens = r.min_tokens();
  g.sampling.eos_id = ending_eos;
  g.sampling.logit_bias = std::move(bias_by_id);
  g.sampling.guide = std::move(guide).value();
  g.sampling.guide_eos_id = ctx.eos_id;
  g.stop.max_tokens = max_tokens;
  g.stop.min_tokens = r.min_tokens();
  g.stop.eos_id = ending_eos;
  g.stop.stop.assign(r.stop().begin(), r.stop().end());
  g.stop.stop_token_ids.assign(r.stop_token_ids().begin(), r.stop_token_ids().end());
  g.stop.include_stop = r.include_stop_str_in_output();
  g.sampling.stop_token_ids = g.stop.stop_token_ids;
  g.return_routes = r.return_routes();
  g.return_logprobs = r.return_logprobs();
  g.top_logprobs = r.top_logprobs();
  g.return_prompt_logprobs = r.return_prompt_logprobs();
  return g;
}

}  // namespace modserve
