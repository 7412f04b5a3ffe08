#include "engine/experts.h"

#include <cmath>

#include "engine/few_row_linear.h"

namespace modserve {

namespace F = torch::nn::functional;

ExpertImpl::ExpertImpl(int64_t d_model, int64_t d_ff) {
  fc1 = register_module("fc1", torch::nn::Linear(torch::nn::LinearOptions(d_model, d_ff).bias(false)));
  fc2 = register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(d_ff, d_model).bias(false)));
}

torch::Tensor ExpertImpl::forward(const torch::Tensor& h) { return Linear(fc2, LinearGelu(fc1, h)); }

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

torch::Tensor MixtureOfExpertsImpl::Assignments(const torch::Tensor& choice) const {
  auto experts = torch::arange(n_experts_, choice.options()).view({1, 1, n_experts_});  // [1, 1, E]
  return (choice.unsqueeze(-1) == experts).any(1);                                  // [N, E]
}

torch::Tensor MixtureOfExpertsImpl::Combine(const torch::Tensor& h, const torch::Tensor& probs, const torch::Tensor& assign,
                                            std::vector<int64_t>* rows_per_expert) {
  // h: [N, d]; probs: [N, C]; assign: [N, E].
  auto out = torch::zeros_like(h);  // [N, d]
  for (int64_t e = 0; e < n_experts_; ++e) {
    auto rows = assign.select(1, e).nonzero().squeeze(1);  // [M_e] rows sent to expert e
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
  auto probs = torch::softmax(Linear(router, h).to(torch::kFloat), -1);  // [M, C]
  auto assign = Assignments(std::get<1>(probs.topk(top_k_, -1)));  // [M, E]; a no-op choice assigns nothing
  rows_per_expert->assign(static_cast<size_t>(n_experts_), 0);
  if (ran_mask != nullptr) *ran_mask = assign.any(1);
  return Combine(h, probs, assign, rows_per_expert);
}

torch::Tensor MixtureOfExpertsImpl::forward(const torch::Tensor& h, const torch::Tensor& valid, bool apply_capacity,
                                            ExpertTrace* trace) {
  // h: [B, T, d]; valid: [B, T] bool.
  const int64_t B = h.size(0), T = h.size(1), d = h.size(2);
  auto rows = valid.reshape({-1}).nonzero().squeeze(1);       // [N] indices into B * T
  auto hf = h.reshape({B * T, d}).index_select(0, rows);      // [N, d]
  auto group = rows.div(T, "floor");                          // [N] sequence of each row
  auto logits = Linear(router, hf).to(torch::kFloat);                 // [N, C]
  auto probs = torch::softmax(logits, -1);                    // [N, C]
  auto choice = std::get<1>(logits.topk(top_k_, -1));         // [N, k] sampling routing
  auto per_seq = valid.sum(1).to(torch::kDouble);             // [B] rows of each sequence
  auto share = integrated_ ? per_seq * capacity_ / static_cast<double>(n_experts_)
                           : per_seq * (capacity_factor_ * static_cast<double>(top_k_) / static_cast<double>(n_experts_));
  auto cap = (share - 1e-9).ceil().clamp_min(0).to(torch::kLong);  // [B]

  torch::Tensor train_assign;  // [N, E]
  if (integrated_) {
    // Expert choice: each expert takes its cap highest-probability tokens of each sequence.
    auto scores = torch::full({B * T, n_experts_}, -1.0, probs.options())
                      .index_copy(0, rows, probs.narrow(1, 0, n_experts_).detach())
                      .view({B, T, n_experts_});  // [B, T, E], invalid rows lowest
    const int64_t kmax = std::min<int64_t>(T, cap.max().item<int64_t>());
    auto full_assign = torch::zeros({B, T, n_experts_}, valid.options());
    if (kmax > 0) {
      auto top = std::get<1>(scores.topk(kmax, 1));                                   // [B, kmax, E] token indices
      auto rank_ok = torch::arange(kmax, cap.options()).view({1, kmax, 1}) < cap.view({B, 1, 1});  // [B, kmax, 1]
      full_assign = full_assign.scatter(1, top, rank_ok.expand({B, kmax, n_experts_}));
    }
    train_assign = full_assign.view({B * T, n_experts_}).index_select(0, rows) & valid.reshape({-1}).index_select(0, rows).unsqueeze(1);
  } else {
    // Token choice within capacity, earliest rows of each sequence first.
    auto assign = Assignments(choice);                      // [N, E]
    auto a = assign.to(torch::kLong);
    auto before = a.cumsum(0) - a;                          // [N, E] rows before, all sequences
    auto per_group = torch::zeros({B, n_experts_}, a.options()).index_add(0, group, a);  // [B, E]
    auto group_start = per_group.cumsum(0) - per_group;     // [B, E]
    auto rank = before - group_start.index_select(0, group);  // [N, E] rank within the sequence
    train_assign = assign & (rank < cap.index_select(0, group).unsqueeze(1));
  }
  auto ran = apply_capacity ? train_assign : Assignments(choice);  // [N, E]
  auto out_rows = Combine(hf, probs, ran, nullptr);                 // [N, d]
  auto out = torch::zeros({B * T, d}, out_rows.options()).index_add(0, rows, out_rows).view({B, T, d});

  if (trace != nullptr) {
    trace->logits = logits;
    trace->choice = choice;
    trace->train_assign = train_assign;
    trace->ran = ran;
    trace->group = group;
    trace->capacity = cap;
    const int64_t n = rows.size(0);
    if (integrated_) {
      // The training assignment as a class: the taking expert with the highest probability, else the no-op.
      auto masked = probs.narrow(1, 0, n_experts_).detach().masked_fill(~train_assign, -1.0);  // [N, E]
      auto best = std::get<1>(masked.max(1));                                                   // [N]
      auto target = torch::where(train_assign.any(1), best, torch::full_like(best, choices_ - 1));
      trace->route_loss = n == 0 ? torch::zeros({}, probs.options())
                                 : F::cross_entropy(router(hf.detach()).to(torch::kFloat), target);
    } else if (n == 0) {
      trace->balance_loss = torch::zeros({}, probs.options());
    } else {
      auto f = F::one_hot(choice.select(1, 0), choices_).to(torch::kFloat).mean(0);  // [C] share of first choices
      trace->balance_loss = static_cast<double>(n_experts_) * (f * probs.mean(0)).sum();
    }
  }
  return out;
}

}  // namespace modserve
