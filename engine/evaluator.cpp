#include "engine/evaluator.h"

#include <cmath>

namespace modserve {

namespace {

struct Accum {
  double nll_nats = 0;
  std::vector<double> hits;   // per routed layer
  std::vector<double> count;  // per routed layer
};

// Runs one batch of equal-length rows [B, n + 1] in `mode`; adds the summed
// NLL and per-layer statistics (`agreement` or compute fraction) to `acc`.
void RunBatch(MoDTransformer& model, const torch::Tensor& rows, RouteMode mode, Accum* acc) {
  const int64_t n = rows.size(1) - 1;
  auto input = rows.narrow(1, 0, n);
  auto target = rows.narrow(1, 1, n);
  ForwardOutput out = model->Forward(input, mode);
  auto logp = torch::log_softmax(out.logits, -1);  // [B, n, V]
  acc->nll_nats -= logp.gather(-1, target.unsqueeze(-1)).sum().item<double>();
  acc->hits.resize(out.routed.size(), 0.0);
  acc->count.resize(out.routed.size(), 0.0);
  for (size_t i = 0; i < out.routed.size(); ++i) {
    const auto& t = out.routed[i];
    torch::Tensor hit = mode == RouteMode::kTopK ? (t.causal_selected == t.topk_mask) : t.selected;
    acc->hits[i] += hit.sum().item<double>();
    acc->count[i] += static_cast<double>(hit.numel());
  }
}

Accum RunAll(MoDTransformer& model, const std::vector<torch::Tensor>& windows, RouteMode mode, int64_t batch) {
  Accum acc;
  size_t i = 0;
  while (i < windows.size()) {
    std::vector<torch::Tensor> group;
    const int64_t len = windows[i].size(1);
    while (i < windows.size() && windows[i].size(1) == len && static_cast<int64_t>(group.size()) < batch) group.push_back(windows[i++]);
    RunBatch(model, torch::cat(group, 0), mode, &acc);
  }
  return acc;
}

double Mean(const std::vector<double>& v) {
  if (v.empty()) return 1.0;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

}  // namespace

EvalResult Evaluate(MoDTransformer& model, const TokenCorpus& text, const EvalOptions& opts) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  std::vector<torch::Tensor> windows = text.EvalWindows(opts.seq_len);
  if (opts.max_bytes > 0) {
    int64_t kept = 0;
    size_t n = 0;
    while (n < windows.size() && kept < opts.max_bytes) kept += windows[n++].size(1) - 1;
    windows.resize(n);
  }
  EvalResult r;
  for (const auto& w : windows) r.bytes += w.size(1) - 1;
  Accum pred = RunAll(model, windows, RouteMode::kPredictor, opts.batch);
  Accum topk = RunAll(model, windows, RouteMode::kTopK, opts.batch);
  const double denom = std::log(2.0) * static_cast<double>(std::max<int64_t>(r.bytes, 1));
  r.bits_per_byte = pred.nll_nats / denom;
  r.bits_per_byte_topk = topk.nll_nats / denom;
  r.routed_layers = model->config().routing_enabled ? model->config().routed_layers : std::vector<int64_t>{};
  for (size_t i = 0; i < pred.hits.size(); ++i) r.compute_fraction.push_back(pred.hits[i] / pred.count[i]);
  for (size_t i = 0; i < topk.hits.size(); ++i) r.predictor_agreement.push_back(topk.hits[i] / topk.count[i]);
  r.mean_compute_fraction = Mean(r.compute_fraction);
  r.mean_predictor_agreement = Mean(r.predictor_agreement);
  if (was_training) model->train();
  return r;
}

nlohmann::json EvalResult::ToJson() const {
  nlohmann::json per_layer = nlohmann::json::array();
  for (size_t i = 0; i < routed_layers.size() && i < compute_fraction.size(); ++i) {
    per_layer.push_back({{"layer", routed_layers[i]},
                         {"predictor_agreement", predictor_agreement[i]},
                         {"compute_fraction", compute_fraction[i]}});
  }
  return {{"bytes", bytes},
          {"bits_per_byte", bits_per_byte},
          {"bits_per_byte_topk", bits_per_byte_topk},
          {"predictor_routing_overhead", bits_per_byte_topk > 0 ? bits_per_byte / bits_per_byte_topk - 1.0 : 0.0},
          {"predictor_agreement", mean_predictor_agreement},
          {"compute_fraction", mean_compute_fraction},
          {"routed_layers", per_layer}};
}

}  // namespace modserve
