#include "engine/routed_rows.h"

#include "engine/few_row_gemm.h"
#include "engine/few_row_linear.h"
#include "engine/row_norm_rope.h"

namespace modserve {

namespace {

// The predictor's normalization (PredictorImpl::forward: RmsNormalize(x, 1e-5)).
constexpr float kPredictorNormEps = 1e-5f;

bool TakesLoops(const BlockImpl& block, const torch::Tensor& x) {
  const auto& p = block.predictor;
  return x.dim() == 2 && x.is_contiguous() && InferenceF32OnCpu(x, block.router->weight) &&
         InferenceF32OnCpu(x, p->fc1->weight) && InferenceF32OnCpu(x, p->fc2->weight) && p->fc1->bias.defined() &&
         p->fc2->bias.defined() && !block.router->bias.defined();
}

}  // namespace

std::vector<int64_t> RowsWhere(const torch::Tensor& mask) {
  auto m = mask.to(torch::kCPU).contiguous();
  const bool* p = m.data_ptr<bool>();
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < m.numel(); ++i) {
    if (p[i]) rows.push_back(i);
  }
  return rows;
}

RoutedTokens ScoreRoutedTokens(BlockImpl& block, const torch::Tensor& x) {
  const int64_t N = x.size(0);
  RoutedTokens t;
  if (!TakesLoops(block, x)) {
    auto r = Linear(block.router, x).squeeze(-1).to(torch::kCPU, torch::kFloat).contiguous();  // [N]
    auto sel = (block.predictor(x) > 0).to(torch::kCPU).contiguous();                          // [N] bool
    t.router.assign(r.data_ptr<float>(), r.data_ptr<float>() + N);
    const bool* s = sel.data_ptr<bool>();
    t.computes.assign(s, s + N);
    t.rows = RowsWhere(sel);
    return t;
  }
  const int64_t d = x.size(1);
  const float* xp = x.data_ptr<float>();
  // r = w · x [N], on this thread: one output column.
  t.router.resize(static_cast<size_t>(N));
  FewRowGemm(xp, N, block.router->weight.data_ptr<float>(), 1, d, t.router.data(), 0, 1);
  // logit = fc2(gelu(fc1(x / rms(x)))) [N].
  auto& p = *block.predictor;
  auto xn = torch::empty_like(x);  // [N, d]
  RmsNormRows(xp, N, d, nullptr, kPredictorNormEps, xn.data_ptr<float>());
  auto g = torch::gelu(Linear(p.fc1, xn)).contiguous();  // [N, hidden]
  std::vector<float> logits(static_cast<size_t>(N));
  FewRowGemm(g.data_ptr<float>(), N, p.fc2->weight.data_ptr<float>(), 1, g.size(1), logits.data(), 0, 1);
  const float b2 = p.fc2->bias.data_ptr<float>()[0];
  t.computes.resize(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    const bool computes = logits[static_cast<size_t>(i)] + b2 > 0.f;
    t.computes[static_cast<size_t>(i)] = computes ? 1 : 0;
    if (computes) t.rows.push_back(i);
  }
  return t;
}

torch::Tensor AddRoutedDelta(torch::Tensor x, const RoutedTokens& t, const torch::Tensor& delta) {
  const auto M = static_cast<int64_t>(t.rows.size());
  if (!(x.is_contiguous() && delta.is_contiguous() && InferenceF32OnCpu(x, delta))) {
    auto idx = torch::tensor(t.rows, torch::TensorOptions().dtype(torch::kLong));                                         // [M] on the CPU
    auto r = torch::from_blob(const_cast<float*>(t.router.data()), {static_cast<int64_t>(t.router.size())}, torch::kFloat);  // [N]
    auto scale = r.index_select(0, idx).to(delta.device(), delta.scalar_type()).unsqueeze(-1);                            // [M, 1]
    return x.index_add(0, idx.to(x.device()), delta * scale);
  }
  const int64_t d = x.size(1);
  float* xp = x.data_ptr<float>();
  const float* dp = delta.data_ptr<float>();
  for (int64_t i = 0; i < M; ++i) {
    const int64_t row = t.rows[static_cast<size_t>(i)];
    const float r = t.router[static_cast<size_t>(row)];
    float* xr = xp + row * d;
    const float* dr = dp + i * d;
    for (int64_t k = 0; k < d; ++k) xr[k] += dr[k] * r;
  }
  return x;
}

}  // namespace modserve
