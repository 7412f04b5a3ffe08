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
  l.balance = zero;
  int64_t predicted = 0, balanced = 0;
  for (const auto& t : out.routed) {
    if (t.predictor_logits.defined()) {
      auto target = t.topk_mask.to(t.predictor_logits.scalar_type());
      l.predictor = l.predictor + F::binary_cross_entropy_with_logits(t.predictor_logits, target);
      if (w.router_aux > 0) l.router_aux = l.router_aux + F::binary_cross_entropy_with_logits(t.router_logits, target);
      ++predicted;
    }
    if (t.experts.route_loss.defined()) {  // integrated MoDE: the router learns its training assignment
      l.predictor = l.predictor + t.experts.route_loss;
      ++predicted;
    }
    if (t.experts.balance_loss.defined()) {
      l.balance = l.balance + t.experts.balance_loss;
      ++balanced;
    }
  }
  if (predicted > 0) {
    l.predictor = l.predictor / static_cast<double>(predicted);
    l.router_aux = l.router_aux / static_cast<double>(predicted);
  }
  if (balanced > 0) l.balance = l.balance / static_cast<double>(balanced);
  l.total = l.lm + w.predictor * l.predictor + w.router_aux * l.router_aux + w.balance * l.balance;
  return l;
}

}  // namespace modserve
