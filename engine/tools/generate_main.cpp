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
  Flags f("mod-generate", "Generates text from a modserve checkpoint.");
  f.Define("model", "models/mod-small", "checkpoint directory");
  f.Define("prompt", "The ", "prompt text");
  f.Define("max-tokens", "200", "tokens to generate");
  f.Define("temperature", "0.8", "sampling temperature (0: greedy)");
  f.Define("top-k", "0", "top-k cut (0: none)");
  f.Define("top-p", "0.95", "nucleus cut (1: none)");
  f.Define("seed", "0", "sampling seed");
  MODSERVE_RETURN_IF_ERROR(f.Parse(argc, argv));
  if (f.help_requested()) return Status::Ok();
  auto model = LoadCheckpoint(f.Str("model"));
  if (!model.ok()) return model.status();
  SamplingParams p;
  int64_t max_tokens = 0, seed = 0;
  MODSERVE_RETURN_IF_ERROR(f.Get("max-tokens", &max_tokens));
  MODSERVE_RETURN_IF_ERROR(f.Get("temperature", &p.temperature));
  MODSERVE_RETURN_IF_ERROR(f.Get("top-k", &p.top_k));
  MODSERVE_RETURN_IF_ERROR(f.Get("top-p", &p.top_p));
  MODSERVE_RETURN_IF_ERROR(f.Get("seed", &seed));
  if (max_tokens < 1) return InvalidArgument("--max-tokens must be >= 1");
  if (p.temperature < 0) return InvalidArgument("--temperature must be >= 0");
  if (p.top_k < 0) return InvalidArgument("--top-k must be >= 0");
  if (!(p.top_p > 0 && p.top_p <= 1)) return InvalidArgument("--top-p must be in (0, 1]");
  p.seed = static_cast<uint64_t>(seed);
  const ModelConfig& cfg = (*model)->config();
  ByteTokenizer tok(cfg.bos_id, cfg.eos_id);
  auto result = ReferenceGenerate(*model, tok.Encode(f.Str("prompt"), /*add_bos=*/true), max_tokens, p);
  std::printf("%s%s\n", f.Str("prompt").c_str(), tok.Decode(result.tokens).c_str());
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) { return RunToolMain("mod-generate", argc, argv, Run); }
