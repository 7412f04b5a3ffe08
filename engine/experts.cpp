#include "engine/experts.h"

#include <cmath>

namespace modserve {

namespace F = torch::nn::functional;

ExpertImpl::ExpertImpl(int64_t d_model, int64_t d_ff) {
  fc1 = register_module("fc1", torch::nn::Linear(torch::nn::LinearOptions(d_model, d_ff).bias(false)));
  fc2 = register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(d_ff, d_model).bias(false)));
}

torch::Tensor ExpertImpl::forward(const torch::Tensor& h) { return fc2(F::gelu(fc1(h))); }

MixtureOfExpertsImpl::MixtureOfExpertsImpl(const ModelConfig& cfg)
    : n_experts_(cfg.moe_experts),
      choices_(cfg.ExpertChoices()),
      top_k_(cfg.moe_top_k),
      integrated_(cfg.mode == "integrated"),
      capacity_factor_(cfg.moe_capacity_factor),
      capacity_(cfg.capacity) {
  router = register_module("router", torch::nn::Linear(torch::nn::LinearOptions(cfg.d_model, choices_).bias(false)));
  experts = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < n_experts_; ++e) experts->push_back(Expert(cfg.d_model, cfg.d_ff));
}

torch::Tensor MixtureOfExpertsImpl::Combine(const torch::Tensor& h, const torch::Tensor& probs, const torch::Tensor& choice,
                                            const torch::Tensor& ran, std::vector<int64_t>* rows_per_expert) {
  // h: [N, d]; probs: [N, C]; choice, ran: [N, k].
  auto out = torch::zeros_like(h);  // [N, d]
  for (int64_t e = 0; e < n_experts_; ++e) {
    auto rows = ((choice == e) & ran).any(1).nonzero().squeeze(1);  // [M_e] rows sent to expert e
    const int64_t m = rows.size(0);
    if (rows_per_expert != nullptr) (*rows_per_expert)[static_cast<size_t>(e)] += m;
    if (m == 0) continue;  // an expert no row chose is not touched
    auto gate = probs.index_select(0, rows).select(1, e).unsqueeze(-1);  // [M_e, 1]
    auto y = experts[e]->as<ExpertImpl>()->forward(h.index_select(0, rows)) * gate.to(h.scalar_type());  // [M_e, d]
    out = out.index_add(0, rows, y.to(out.scalar_type()));
  }
  return out;
}

torch::Tensor MixtureOfExpertsImpl::Route(const torch::Tensor& h, std::vector<int64_t>* rows_per_expert,
                                          torch::Tensor* ran_mask) {
  // h: [M, d].
  auto probs = torch::softmax(router(h).to(torch::kFloat), -1);  // [M, C]
  auto choice = std::get<1>(probs.topk(top_k_, -1));               // [M, k]
  auto ran = choice < n_experts_;                                  // [M, k]: the no-op choice runs nothing
  rows_per_expert->assign(static_cast<size_t>(n_experts_), 0);
  if (ran_mask != nullptr) *ran_mask = ran.any(1);
  return Combine(h, probs, choice, ran, rows_per_expert);
}

torch::Tensor MixtureOfExpertsImpl::forward(const torch::Tensor& h, const torch::Tensor& valid, bool apply_capacity,
                                            ExpertTrace* trace) {
  // h: [B, T, d]; valid: [B, T] bool.
  const int64_t B = h.size(0), T = h.size(1), d = h.size(2);
  auto rows = valid.reshape({-1}).nonzero().squeeze(1);       // [N] indices into B * T
  auto hf = h.reshape({B * T, d}).index_select(0, rows);      // [N, d]
  auto group = rows.div(T, "floor");                          // [N] sequence of each row
  auto logits = router(hf).to(torch::kFloat);                 // [N, C]
  auto probs = torch::softmax(logits, -1);                    // [N, C]
  auto choice = std::get<1>(logits.topk(top_k_, -1));         // [N, k]
  auto real = choice < n_experts_;                            // [N, k]

  // Capacity: what one expert may take from each sequence, and which
  // assignments fit, earliest rows first.
  auto per_seq = valid.sum(1).to(torch::kDouble);                                        // [B]
  auto share = integrated_ ? per_seq * capacity_ / static_cast<double>(n_experts_)
                           : per_seq * static_cast<double>(top_k_) / static_cast<double>(n_experts_);
  auto cap = (share * capacity_factor_ - 1e-9).ceil().clamp_min(0).to(torch::kLong);  // [B]
  auto within = torch::zeros_like(real);                                                 // [N, k]
  auto cap_of_row = cap.index_select(0, group);                                          // [N]
  for (int64_t e = 0; e < n_experts_; ++e) {
    auto m = choice == e;                                                  // [N, k]
    auto mr = m.any(1).to(torch::kLong);                                   // [N]
    auto before = mr.cumsum(0) - mr;                                       // [N] rows before, all sequences
    auto per_group = torch::zeros({B}, mr.options()).index_add(0, group, mr);  // [B]
    auto group_start = per_group.cumsum(0) - per_group;                    // [B]
    auto pos = before - group_start.index_select(0, group);                // [N] rank within the sequence
    within = within | (m & (pos < cap_of_row).unsqueeze(1));
  }
  auto ran = apply_capacity ? within : real;  // [N, k]
  auto out_rows = Combine(hf, probs, choice, ran, nullptr);  // [N, d]
  auto out = torch::zeros({B * T, d}, out_rows.options()).index_add(0, rows, out_rows).view({B, T, d});

  if (trace != nullptr) {
    trace->logits = logits;
    trace->choice = choice;
    trace->within_capacity = within;
    trace->ran = ran;
    trace->group = group;
    trace->capacity = cap;
    const int64_t n = rows.size(0);
    if (n == 0) {
      trace->balance_loss = torch::zeros({}, probs.options());
    } else {
      auto f = F::one_hot(choice.select(1, 0), choices_).to(torch::kFloat).mean(0);  // [C] share of first choices
      auto p = probs.mean(0);                                                        // [C] mean router probability
      if (integrated_) {
        auto target = torch::full({choices_}, capacity_ / static_cast<double>(n_experts_), p.options());
        target[choices_ - 1] = 1.0 - capacity_;
        trace->balance_loss = (f * p / target).sum();
      } else {
        trace->balance_loss = static_cast<double>(n_experts_) * (f * p).sum();
      }
    }
  }
  return out;
}

}  // namespace modserve
