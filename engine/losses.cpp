#include "engine/losses.h"

namespace modserve {

Losses ComputeLosses(const ForwardOutput& out, const torch::Tensor& targets, const LossWeights& w) {
  namespace F = torch::nn::functional;
  Losses l;
  const int64_t V = out.logits.size(-1);
  l.lm = F::cross_entropy(out.logits.reshape({-1, V}).to(torch::kFloat), targets.reshape({-1}));
  auto zero = torch::zeros({}, out.logits.options());
  l.predictor = zero;
  l.router_aux = zero;
  for (const auto& t : out.routed) {
    auto target = t.topk_mask.to(t.predictor_logits.scalar_type());
    l.predictor = l.predictor + F::binary_cross_entropy_with_logits(t.predictor_logits, target);
    if (w.router_aux > 0) l.router_aux = l.router_aux + F::binary_cross_entropy_with_logits(t.router_logits, target);
  }
  if (!out.routed.empty()) {
    l.predictor = l.predictor / static_cast<double>(out.routed.size());
    l.router_aux = l.router_aux / static_cast<double>(out.routed.size());
  }
  l.total = l.lm + w.predictor * l.predictor + w.router_aux * l.router_aux;
  return l;
}

}  // namespace modserve
