#include "fuzz_targets.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "engine/safetensors.h"
#include "engine/json_schema_regex.h"
#include "engine/token_guide.h"
#include "server/request_decoding.h"
#include "server/request_validation.h"
#include "server/server_config.h"
#include "server/utf8_stream.h"

namespace modserve::fuzz {

void Fail(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz invariant broken: %s (%s:%d)\n", what, file, line);
  std::abort();
}

void RequestValidation(const uint8_t* data, size_t size) {
  auto req = DecodeGenerateRequest(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!req.ok()) {
    FUZZ_CHECK(!req.status().message().empty());
    return;
  }
  ValidationContext ctx;
  ctx.max_context = 256;
  ctx.vocab_size = 258;
  auto g = ValidateGenerateRequest(*req, ctx, 7, "fuzz");
  if (!g.ok()) {
    FUZZ_CHECK(g.status().code() == StatusCode::kInvalidArgument);
    FUZZ_CHECK(!g.status().message().empty());
    return;
  }
  const auto prompt_tokens = static_cast<int64_t>(g->prompt.size());
  FUZZ_CHECK(prompt_tokens >= 2 && prompt_tokens - 1 <= ctx.limits.max_prompt_bytes);
  FUZZ_CHECK(g->stop.max_tokens >= 1 && g->stop.max_tokens <= ctx.limits.max_tokens);
  FUZZ_CHECK(prompt_tokens + g->stop.max_tokens <= ctx.max_context);
  FUZZ_CHECK(g->sampling.temperature >= 0 && g->sampling.temperature <= 2);
  FUZZ_CHECK(g->sampling.top_p > 0 && g->sampling.top_p <= 1);
  FUZZ_CHECK(static_cast<int64_t>(g->stop.stop.size()) <= ctx.limits.max_stop);
  for (const auto& s : g->stop.stop) FUZZ_CHECK(!s.empty() && IsValidUtf8(s));
  FUZZ_CHECK(g->top_logprobs >= 0 && g->top_logprobs <= MaxTopLogprobs(ctx.vocab_size));
  FUZZ_CHECK(g->top_logprobs == 0 || g->return_logprobs || g->return_prompt_logprobs);
  FUZZ_CHECK(g->return_prompt_logprobs == req->return_prompt_logprobs());
  FUZZ_CHECK(g->sampling.repetition_penalty >= 0.01 && g->sampling.repetition_penalty <= 10);
  FUZZ_CHECK(std::fabs(g->sampling.presence_penalty) <= 2 && std::fabs(g->sampling.frequency_penalty) <= 2);
  FUZZ_CHECK(g->stop.min_tokens >= 0 && g->stop.min_tokens <= g->stop.max_tokens);
  FUZZ_CHECK(g->sampling.min_tokens == g->stop.min_tokens && g->sampling.eos_id == g->stop.eos_id);
  FUZZ_CHECK(g->sampling.logit_bias.size() == static_cast<size_t>(req->logit_bias_size()));
  for (const auto& [id, bias] : g->sampling.logit_bias) {
    FUZZ_CHECK(id >= 0 && id < ctx.vocab_size && std::fabs(bias) <= 100);
  }
  FUZZ_CHECK(g->cache_salt == req->cache_salt() && g->cache_salt.size() <= kMaxCacheSaltBytes);
  FUZZ_CHECK(IsValidUtf8(req->prompt()));
  FUZZ_CHECK(req->n() >= 0 && req->n() <= ctx.limits.max_n);
}

void Utf8Stream(const uint8_t* data, size_t size) {
  if (size == 0) return;
  // The first byte seeds the cut points; the rest is the byte stream.
  const unsigned seed = data[0];
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  Utf8StreamDecoder whole, pieces;
  std::string one_shot = whole.Push(bytes);
  one_shot += whole.Flush();
  std::string cut;
  for (size_t i = 0, k = 0; i < bytes.size(); ++k) {
    const size_t n = 1 + ((seed + k * 7) % 5);  // pieces of 1..5 bytes, like tokens
    const std::string part = pieces.Push(bytes.substr(i, n));
    FUZZ_CHECK(IsValidUtf8(part));
    FUZZ_CHECK(pieces.held_bytes() < 4);
    cut += part;
    i += n;
  }
  cut += pieces.Flush();
  FUZZ_CHECK(IsValidUtf8(one_shot));
  FUZZ_CHECK(cut == one_shot);
  if (IsValidUtf8(bytes)) FUZZ_CHECK(one_shot == bytes);
  FUZZ_CHECK(ValidUtf8PrefixLength(bytes) <= bytes.size());
}

void SafetensorsHeader(const uint8_t* data, size_t size) {
  auto h = ParseSafetensorsHeader(data, size, "fuzz.safetensors");
  if (!h.ok()) {
    FUZZ_CHECK(h.status().message().find("fuzz.safetensors") != std::string::npos);
    return;
  }
  FUZZ_CHECK(h->data_offset >= 8 && h->data_offset <= size);
  const uint64_t data_bytes = size - h->data_offset;
  uint64_t end = 0;
  for (const auto& t : h->tensors) {
    FUZZ_CHECK(t.begin >= end);  // sorted, no overlap
    FUZZ_CHECK(t.begin <= t.end && t.end <= data_bytes);
    FUZZ_CHECK(t.numel() >= 0);
    FUZZ_CHECK(t.end - t.begin == static_cast<uint64_t>(t.numel()) * DTypeSize(t.dtype));
    end = t.end;
  }
}

void ServerConfigYaml(const uint8_t* data, size_t size) {
  auto c = ParseServerConfigYaml(std::string(reinterpret_cast<const char*>(data), size), "fuzz.yaml");
  if (!c.ok()) {
    FUZZ_CHECK(c.status().message().rfind("fuzz.yaml: ", 0) == 0);
    return;
  }
  Status v = c->Validate();
  FUZZ_CHECK(v.ok() || !v.message().empty());
}

void TokenGuidePattern(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const bool choices_mode = !in.empty() && in[0] == '\0';
  const bool schema_mode = !in.empty() && in[0] == '\1';
  std::vector<std::string> choices;
  StatusOr<std::shared_ptr<const TokenGuide>> g = Status::Error(StatusCode::kInternal, "unset");
  if (schema_mode) {
    auto regex = JsonSchemaRegex(in.substr(1), "guided_json");
    if (!regex.ok()) {
      FUZZ_CHECK(regex.status().code() == StatusCode::kInvalidArgument);
      return;
    }
    g = TokenGuide::FromRegex(*regex, "guided_json");
    // The pattern a schema gives always parses: only its size may be refused.
    FUZZ_CHECK(g.ok() || g.status().message().find("too ") != std::string::npos);
  } else if (choices_mode) {
    for (size_t start = 1; start <= in.size();) {
      const size_t nl = std::min(in.find('\n', start), in.size());
      choices.emplace_back(in.substr(start, nl - start));
      start = nl + 1;
    }
    g = TokenGuide::FromChoices(choices, "guided_choice");
  } else {
    g = TokenGuide::FromRegex(in, "guided_regex");
  }
  if (!g.ok()) {
    FUZZ_CHECK(g.status().code() == StatusCode::kInvalidArgument);
    FUZZ_CHECK(!g.status().message().empty());
    return;
  }
  const TokenGuide& guide = **g;
  const int64_t n = guide.num_states();
  FUZZ_CHECK(n >= 1 && n <= TokenGuide::kMaxStates);
  std::vector<uint8_t> seen(static_cast<size_t>(n), 0);
  std::vector<int32_t> todo = {TokenGuide::kStart};
  seen[0] = 1;
  while (!todo.empty()) {
    const int32_t s = todo.back();
    todo.pop_back();
    bool moves = false;
    for (int b = 0; b < 256; ++b) {
      const int32_t t = guide.Next(s, static_cast<uint8_t>(b));
      FUZZ_CHECK(t >= -1 && t < n);
      if (t < 0) continue;
      moves = true;
      if (seen[static_cast<size_t>(t)] == 0) {
        seen[static_cast<size_t>(t)] = 1;
        todo.push_back(t);
      }
    }
    FUZZ_CHECK(moves || guide.Accepting(s));
  }
  for (const std::string& c : choices) {
    const int32_t s = guide.Walk(c);
    FUZZ_CHECK(s >= 0 && guide.Accepting(s));
  }
}

const std::vector<Target>& Targets() {
  static const std::vector<Target> targets = {
      {"request_validation", RequestValidation},
      {"utf8_stream", Utf8Stream},
      {"safetensors_header", SafetensorsHeader},
      {"server_config", ServerConfigYaml},
      {"token_guide", TokenGuidePattern},
  };
  return targets;
}

}  // namespace modserve::fuzz
