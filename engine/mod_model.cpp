#include "engine/mod_model.h"

#include <cmath>
#include <limits>

#include "engine/few_row_linear.h"
#include "engine/row_norm_rope.h"

namespace modserve {

namespace F = torch::nn::functional;

Compaction CompactSelected(const torch::Tensor& selected) {
  // selected: [B, S] bool. Sort key puts selected positions first, each group in
  // position order: key = (!selected) * S + position, all keys distinct.
  const int64_t S = selected.size(1);
  Compaction c;
  auto counts = selected.sum(1);  // [B]
  c.max_count = counts.numel() == 0 ? 0 : counts.max().item<int64_t>();
  if (c.max_count == 0) return c;
  auto pos = torch::arange(S, selected.options().dtype(torch::kLong)).unsqueeze(0);  // [1, S]
  auto key = (~selected).to(torch::kLong) * S + pos;                                 // [B, S]
  auto order = std::get<1>(key.sort(/*dim=*/1));                                     // [B, S]
  c.index = order.narrow(1, 0, c.max_count).contiguous();                            // [B, K]
  auto k = torch::arange(c.max_count, counts.options()).unsqueeze(0);                // [1, K]
  c.valid = k < counts.unsqueeze(1);                                                 // [B, K]
  return c;
}

std::pair<torch::Tensor, torch::Tensor> RopeCosSin(const torch::Tensor& positions, int64_t head_dim, double theta) {
  const int64_t half = head_dim / 2;
  auto opts = positions.options().dtype(torch::kFloat);
  auto inv_freq = torch::pow(theta, -torch::arange(0, half, opts) * 2.0 / static_cast<double>(head_dim));  // [half]
  auto ang = positions.to(torch::kFloat).unsqueeze(-1) * inv_freq;                                         // [..., half]
  return {ang.cos(), ang.sin()};
}

torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& positions, double theta) {
  // x: [B, H, T, hd]; positions: [B, T] int64.
  const int64_t hd = x.size(-1);
  const int64_t half = hd / 2;
  auto [cos_t, sin_t] = RopeCosSin(positions, hd, theta);  // [B, T, half]
  auto cos = cos_t.unsqueeze(1).to(x.scalar_type());        // [B, 1, T, half]
  auto sin = sin_t.unsqueeze(1).to(x.scalar_type());
  auto x1 = x.narrow(-1, 0, half);
  auto x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);  // [B, H, T, hd]
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

namespace {

// x / rms(x) (· weight, if defined) in one pass: f32 or bf16 CPU inference only.
torch::Tensor FusedRmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const int64_t dim = x.size(-1);
  auto xc = x.contiguous();
  auto out = torch::empty_like(xc);  // [..., dim]
  const int64_t rows = dim == 0 ? 0 : xc.numel() / dim;
  if (xc.scalar_type() == torch::kBFloat16) {
    RmsNormRowsBf16(static_cast<const uint16_t*>(xc.data_ptr()), rows, dim,
                    weight.defined() ? static_cast<const uint16_t*>(weight.data_ptr()) : nullptr, static_cast<float>(eps),
                    static_cast<uint16_t*>(out.data_ptr()));
  } else {
    RmsNormRows(xc.data_ptr<float>(), rows, dim, weight.defined() ? weight.data_ptr<float>() : nullptr, static_cast<float>(eps),
                out.data_ptr<float>());
  }
  return out;
}

bool TakesFusedNorm(const torch::Tensor& x, const torch::Tensor& weight) {
  const torch::Tensor& w = weight.defined() ? weight : x;
  return (InferenceF32OnCpu(x, w) || InferenceBf16OnCpu(x, w)) && x.dim() >= 1 &&
         (!weight.defined() || (weight.is_contiguous() && weight.numel() == x.size(-1)));
}

}  // namespace

torch::Tensor RmsNormalize(const torch::Tensor& x, double eps) {
  if (TakesFusedNorm(x, {})) return FusedRmsNorm(x, {}, eps);
  auto xf = x.to(torch::kFloat);  // statistics in float32 whatever the activations' dtype
  auto rms = torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (xf * rms).to(x.scalar_type());
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (TakesFusedNorm(x, weight)) return FusedRmsNorm(x, weight, eps_);
  return RmsNormalize(x, eps_) * weight;
}

PredictorImpl::PredictorImpl(int64_t d_model, int64_t hidden) {
  fc1 = register_module("fc1", torch::nn::Linear(torch::nn::LinearOptions(d_model, hidden).bias(true)));
  fc2 = register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(hidden, 1).bias(true)));
}

torch::Tensor PredictorImpl::forward(const torch::Tensor& x) {
  // Parameter-free RMS normalization keeps the predictor's input scale fixed as
  // the residual stream grows during training.
  return Linear(fc2, LinearGelu(fc1, RmsNormalize(x, 1e-5))).squeeze(-1);
}

BlockImpl::BlockImpl(const ModelConfig& cfg, int64_t layer)
    : n_heads_(cfg.n_heads), head_dim_(cfg.head_dim()), rope_theta_(cfg.rope_theta) {
  const int64_t d = cfg.d_model;
  auto lin = [](int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)); };
  attn_norm = register_module("attn_norm", RMSNorm(d, cfg.norm_eps));
  wqkv = register_module("wqkv", lin(d, 3 * d));
  wo = register_module("wo", lin(d, d));
  mlp_norm = register_module("mlp_norm", RMSNorm(d, cfg.norm_eps));
  if (cfg.HasExperts(layer)) {
    moe = register_module("moe", MixtureOfExperts(cfg));
  } else {
    fc1 = register_module("fc1", lin(d, cfg.d_ff));
    fc2 = register_module("fc2", lin(cfg.d_ff, d));
  }
  if (cfg.SkipsAttention(layer)) {
    router = register_module("router", lin(d, 1));
    predictor = register_module("predictor", Predictor(d, cfg.predictor_hidden));
  }
}

torch::Tensor BlockImpl::Qkv(const torch::Tensor& x) {
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = 3;
  shape.push_back(n_heads_);
  shape.push_back(head_dim_);
  return Linear(wqkv, attn_norm(x)).view(shape);  // [..., 3, H, hd]
}

torch::Tensor BlockImpl::Attend(const torch::Tensor& heads, c10::IntArrayRef x_shape) {
  return Linear(wo, heads.reshape(x_shape));  // [..., H, hd] -> [..., d]
}

torch::Tensor BlockImpl::DenseMlp(const torch::Tensor& x_plus_attn) {
  return Linear(fc2, LinearGelu(fc1, mlp_norm(x_plus_attn)));  // [..., d]
}

torch::Tensor BlockImpl::Delta(const torch::Tensor& x, const torch::Tensor& positions, const torch::Tensor& key_valid,
                               bool expert_capacity, ExpertTrace* trace) {
  // x: [B, T, d]; positions: [B, T]; key_valid: [B, T] bool.
  const int64_t T = x.size(1);
  auto qkv = Qkv(x).permute({2, 0, 3, 1, 4});                                                       // [3, B, H, T, hd]
  auto q = ApplyRope(qkv[0], positions, rope_theta_);                                             // [B, H, T, hd]
  auto k = ApplyRope(qkv[1], positions, rope_theta_);
  auto v = qkv[2];
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));  // [B, H, T, T]
  // Causal by real position, among valid keys; the diagonal keeps padding rows finite.
  auto allowed = positions.unsqueeze(1) <= positions.unsqueeze(2);                                  // [B, Tq, Tk]
  allowed = allowed & key_valid.unsqueeze(1);
  allowed = allowed | torch::eye(T, key_valid.options()).unsqueeze(0);
  scores = scores.masked_fill(~allowed.unsqueeze(1), -std::numeric_limits<float>::infinity());
  auto att = torch::softmax(scores, -1);
  auto a = Attend(torch::matmul(att, v).transpose(1, 2), x.sizes());  // heads [B, T, H, hd] -> [B, T, d]
  if (!moe) return a + DenseMlp(x + a);
  return a + moe->forward(mlp_norm(x + a), key_valid, expert_capacity, trace);  // [B, T, d]
}

MoDTransformerImpl::MoDTransformerImpl(const ModelConfig& cfg) : cfg_(cfg) {
  tok_emb = register_module("tok_emb", torch::nn::Embedding(cfg.vocab_size, cfg.d_model));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t l = 0; l < cfg.n_layers; ++l) layers->push_back(Block(cfg, l));
  final_norm = register_module("final_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(cfg.d_model, cfg.vocab_size).bias(false)));
  InitWeights();
}

void MoDTransformerImpl::InitWeights() {
  torch::NoGradGuard no_grad;
  const double std_out = 0.02 / std::sqrt(2.0 * static_cast<double>(cfg_.n_layers));
  for (auto& p : named_parameters()) {
    const std::string& name = p.key();
    auto& t = p.value();
    if (name.find("norm") != std::string::npos) {
      t.fill_(1.0);
    } else if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      t.zero_();
    } else if (name.find(".wo.") != std::string::npos || name.find(".fc2.") != std::string::npos) {
      t.normal_(0.0, std_out);
    } else {
      t.normal_(0.0, 0.02);
    }
  }
}

ForwardOutput MoDTransformerImpl::Forward(const torch::Tensor& tokens, RouteMode mode) {
  TORCH_CHECK(tokens.dim() == 2, "tokens must be [B, S]");
  const int64_t B = tokens.size(0), S = tokens.size(1), d = cfg_.d_model;
  TORCH_CHECK(S >= 1 && S <= cfg_.max_context, "sequence length ", S, " outside [1, max_context=", cfg_.max_context, "]");
  ForwardOutput out;
  auto x = tok_emb(tokens);                                                           // [B, S, d]
  auto positions = torch::arange(S, tokens.options()).unsqueeze(0).expand({B, S});     // [B, S]
  auto all_valid = torch::ones({B, S}, tokens.options().dtype(torch::kBool));
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    auto block = layers[l]->as<BlockImpl>();
    if (!cfg_.IsRouted(l)) {
      x = x + block->Delta(x, positions, all_valid).to(x.scalar_type());
      continue;
    }
    RoutedLayerTrace trace;
    trace.layer = l;
    if (!cfg_.SkipsAttention(l)) {
      // Integrated MoDE: every token attends; the expert router (with its
      // no-op expert) decides who runs an MLP.
      x = x + block->Delta(x, positions, all_valid, mode == RouteMode::kTopK, &trace.experts).to(x.scalar_type());
      const auto& e = trace.experts;
      trace.topk_mask = e.train_assign.any(1).view({B, S});
      trace.causal_selected = (e.choice < cfg_.moe_experts).any(1).view({B, S});
      trace.selected = e.ran.any(1).view({B, S});
      out.routed.push_back(trace);
      continue;
    }
    trace.router_logits = block->router(x).squeeze(-1).to(torch::kFloat);     // [B, S]
    trace.predictor_logits = block->predictor(x.detach()).to(torch::kFloat);  // [B, S]
    auto topk_idx = std::get<1>(trace.router_logits.detach().topk(cfg_.TopK(S), 1));  // [B, k]
    trace.topk_mask = torch::zeros({B, S}, all_valid.options()).scatter(1, topk_idx, true);
    trace.causal_selected = trace.predictor_logits.detach() > 0;
    trace.selected = mode == RouteMode::kTopK ? trace.topk_mask : trace.causal_selected;
    Compaction c = CompactSelected(trace.selected);
    if (c.max_count == 0) {  // no token computes this layer: skip it whole
      out.routed.push_back(trace);
      continue;
    }
    auto gather_idx = c.index.unsqueeze(-1).expand({B, c.max_count, d});              // [B, K, d]
    auto xs = x.gather(1, gather_idx);                                               // [B, K, d]
    auto ps = positions.gather(1, c.index);                                          // [B, K] real positions
    auto delta = block->Delta(xs, ps, c.valid, mode == RouteMode::kTopK, &trace.experts);  // [B, K, d]
    out.routed.push_back(trace);
    auto w = trace.router_logits.gather(1, c.index) * c.valid.to(x.scalar_type());   // [B, K]
    x = x.scatter_add(1, gather_idx, (delta * w.unsqueeze(-1)).to(x.scalar_type()));
  }
  out.logits = lm_head(final_norm(x));  // [B, S, vocab]
  return out;
}

double MoDTransformerImpl::ParameterCount(const ModelConfig& cfg) {
  // Mirrors the constructors above: BlockImpl, PredictorImpl, MixtureOfExpertsImpl.
  const double d = static_cast<double>(cfg.d_model), ff = static_cast<double>(cfg.d_ff);
  const double hidden = static_cast<double>(cfg.predictor_hidden);
  const double mlp = 2.0 * d * ff;                                  // fc1 [ff, d], fc2 [d, ff]
  const double predictor = d * hidden + hidden + hidden + 1.0;      // fc1 [h, d] + bias, fc2 [1, h] + bias
  double count = 2.0 * d * static_cast<double>(cfg.vocab_size) + d;  // tok_emb, lm_head, final_norm
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    count += 2.0 * d + 4.0 * d * d;  // attn_norm, mlp_norm, wqkv [3d, d], wo [d, d]
    count += cfg.HasExperts(l) ? d * static_cast<double>(cfg.ExpertChoices()) + static_cast<double>(cfg.moe_experts) * mlp : mlp;
    if (cfg.SkipsAttention(l)) count += d + predictor;  // router [1, d], predictor
  }
  return count;
}

double MoDTransformerImpl::ForwardFlopsPerToken(const ModelConfig& cfg, int64_t seq_len, double compute_fraction) {
  const double d = static_cast<double>(cfg.d_model), ff = static_cast<double>(cfg.d_ff);
  const double attn_proj = 2.0 * 4.0 * d * d, mlp = 2.0 * 2.0 * d * ff;
  auto attention = [&](double fraction) {  // scores and weighted values, causal, among attending tokens
    return 2.0 * 2.0 * (fraction * static_cast<double>(seq_len) / 2.0) * d;
  };
  const double predictor = 2.0 * d + 2.0 * (d * static_cast<double>(cfg.predictor_hidden) + static_cast<double>(cfg.predictor_hidden));
  const double expert_router = 2.0 * d * static_cast<double>(cfg.ExpertChoices());
  const double top_k = static_cast<double>(cfg.moe_top_k);
  double flops = 2.0 * d * static_cast<double>(cfg.vocab_size);  // lm head
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    if (!cfg.IsRouted(l)) {
      flops += attn_proj + mlp + attention(1.0);
    } else if (cfg.mode == "mod") {
      const double f = compute_fraction;
      flops += f * (attn_proj + mlp + attention(f)) + predictor;
    } else if (cfg.mode == "staged") {  // depth routing, then top-k experts for the tokens taken
      const double f = compute_fraction;
      flops += f * (attn_proj + expert_router + top_k * mlp + attention(f)) + predictor;
    } else {  // integrated: every token attends and is routed; `f` of them run an expert
      flops += attn_proj + attention(1.0) + expert_router + compute_fraction * mlp;
    }
  }
  return flops;
}

}  // namespace modserve
