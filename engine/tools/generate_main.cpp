// mod-generate: generates text from a checkpoint with the reference
// (full-recompute) decoder. A stand-in for the server until it exists.
#include <cstdio>

#include "engine/checkpoint.h"
#include "engine/flags.h"
#include "engine/reference_generate.h"
#include "engine/tokenizer.h"

using namespace modserve;

namespace {

Status Run(int argc, char** argv) {
  Flags f;
  f.Define("model", "models/mod-small", "checkpoint directory");
  f.Define("prompt", "The ", "prompt text");
  f.Define("max-tokens", "200", "tokens to generate");
  f.Define("temperature", "0.8", "sampling temperature (0: greedy)");
  f.Define("top-k", "0", "top-k cut (0: none)");
  f.Define("top-p", "0.95", "nucleus cut (1: none)");
  f.Define("seed", "0", "sampling seed");
  f.Define("help", "false", "print this help", true);
  MODSERVE_RETURN_IF_ERROR(f.Parse(argc, argv));
  if (f.Bool("help")) {
    std::printf("%s", f.Usage("mod-generate", "Generates text from a modserve checkpoint.").c_str());
    return Status::Ok();
  }
  auto model = LoadCheckpoint(f.Str("model"));
  if (!model.ok()) return model.status();
  SamplingParams p;
  auto max_tokens = f.Int("max-tokens");
  auto temperature = f.Double("temperature");
  auto top_k = f.Int("top-k");
  auto top_p = f.Double("top-p");
  auto seed = f.Int("seed");
  for (const Status& st : {max_tokens.status(), temperature.status(), top_k.status(), top_p.status(), seed.status()}) {
    if (!st.ok()) return st;
  }
  if (*max_tokens < 1) return InvalidArgument("--max-tokens must be >= 1");
  if (*temperature < 0) return InvalidArgument("--temperature must be >= 0");
  if (*top_k < 0) return InvalidArgument("--top-k must be >= 0");
  if (!(*top_p > 0 && *top_p <= 1)) return InvalidArgument("--top-p must be in (0, 1]");
  p.temperature = *temperature;
  p.top_k = *top_k;
  p.top_p = *top_p;
  p.seed = static_cast<uint64_t>(*seed);
  const ModelConfig& cfg = (*model)->config();
  ByteTokenizer tok(cfg.bos_id, cfg.eos_id);
  auto result = ReferenceGenerate(*model, tok.Encode(f.Str("prompt"), /*add_bos=*/true), *max_tokens, p);
  std::printf("%s%s\n", f.Str("prompt").c_str(), tok.Decode(result.tokens).c_str());
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  Status st = Run(argc, argv);
  if (!st.ok()) {
    std::fprintf(stderr, "mod-generate: %s\n", st.message().c_str());
    return 1;
  }
  return 0;
}
