#include "engine/reference_generate.h"

namespace modserve {

ReferenceGeneration ReferenceGenerate(MoDTransformer& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                                      const SamplingParams& sampling) {
  torch::NoGradGuard no_grad;
  const ModelConfig& cfg = model->config();
  Sampler sampler(sampling, prompt);
  std::vector<int64_t> context = prompt;
  ReferenceGeneration out;
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    const auto n = std::min<int64_t>(static_cast<int64_t>(context.size()), cfg.max_context);
    std::vector<int64_t> window(context.end() - n, context.end());
    auto tokens = torch::tensor(window, torch::kLong).unsqueeze(0);  // [1, n]
    auto logits = model->Forward(tokens, RouteMode::kPredictor).logits[0][n - 1].contiguous();  // [V]
    std::vector<float> row(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
    const int64_t next = sampler.Sample(row);
    out.tokens.push_back(next);
    if (next == cfg.eos_id) {
      out.hit_eos = true;
      break;
    }
    context.push_back(next);
  }
  return out;
}

}  // namespace modserve
