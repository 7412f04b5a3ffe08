// ScoreRoutedTokens and AddRoutedDelta against the model's own torch code:
// the plain-loop paths for f32 and bf16 CPU inference, and the torch path
// they fall back to elsewhere.

#include "engine/routed_rows.h"

#include <gtest/gtest.h>

#include "engine/few_row_gemm.h"
#include "engine/few_row_linear.h"

#include "tests/test_models.h"

namespace modserve {
namespace {

using modserve::testing::TinyConfig;

struct Expected {
  torch::Tensor r, logits;  // [N] each
};

Expected TorchScores(BlockImpl& block, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  return {torch::nn::functional::linear(x, block.router->weight).squeeze(-1).to(torch::kFloat),
          block.predictor->fc2(torch::nn::functional::gelu(block.predictor->fc1(RmsNormalize(x, 1e-5)))).squeeze(-1).to(torch::kFloat)};
}

void ExpectMatches(const RoutedTokens& t, const Expected& e, double rtol) {
  const int64_t N = e.r.size(0);
  ASSERT_EQ(static_cast<int64_t>(t.router.size()), N);
  ASSERT_EQ(static_cast<int64_t>(t.computes.size()), N);
  std::vector<int64_t> rows;
  int64_t compute = 0;
  for (int64_t i = 0; i < N; ++i) {
    const float r = e.r[i].item<float>(), logit = e.logits[i].item<float>();
    EXPECT_NEAR(t.router[static_cast<size_t>(i)], r, rtol * (1 + std::abs(r))) << i;
    if (std::abs(logit) > 1e-3) {
      EXPECT_EQ(t.computes[static_cast<size_t>(i)] != 0, logit > 0) << i << " logit " << logit;
    }
    if (t.computes[static_cast<size_t>(i)] != 0) rows.push_back(i);
    compute += logit > 0;
  }
  EXPECT_EQ(t.rows, rows);
  EXPECT_GT(compute, 0) << "a test that checks some computing rows";
  EXPECT_LT(compute, N) << "and some skipping ones";
}

TEST(RoutedRows, LoopsMatchTheModelsTorchCodeOnF32) {
  torch::manual_seed(3);
  MoDTransformer m(TinyConfig());
  m->eval();
  auto& block = *m->layers[1]->as<BlockImpl>();
  torch::NoGradGuard ng;
  auto x = torch::randn({37, m->config().d_model}) * 3;  // [N, d]
  ExpectMatches(ScoreRoutedTokens(block, x), TorchScores(block, x), 1e-5);
}

// In bf16 the loops take the model's own kernels and round where its torch
// ops do, so they agree with the model's forward exactly: the same router
// weights and the same decisions as block.predictor(x) > 0.
TEST(RoutedRows, LoopsMatchTheModelsForwardExactlyOnBf16) {
  if (!CpuHasBf16Dot()) GTEST_SKIP() << "this CPU has no AVX512-BF16: bf16 scoring stays on the torch code";
  torch::manual_seed(6);
  MoDTransformer m(TinyConfig());
  m->eval();
  m->to(torch::kBFloat16);
  auto& block = *m->layers[1]->as<BlockImpl>();
  torch::NoGradGuard ng;
  auto x = (torch::randn({kFewRowsMaxBf16, m->config().d_model}) * 3).to(torch::kBFloat16);  // [N, d]
  const RoutedTokens t = ScoreRoutedTokens(block, x);
  ExpectMatches(t, TorchScores(block, x), 1e-2);
  auto r = Linear(block.router, x).squeeze(-1).to(torch::kFloat);
  auto sel = (block.predictor(x) > 0).contiguous();
  for (int64_t i = 0; i < x.size(0); ++i) {
    EXPECT_EQ(t.router[static_cast<size_t>(i)], r[i].item<float>()) << i;
    EXPECT_EQ(t.computes[static_cast<size_t>(i)] != 0, sel[i].item<bool>()) << i;
  }
}

TEST(RoutedRows, FallsBackToTorchForGradients) {
  torch::manual_seed(4);
  MoDTransformer m(TinyConfig());
  auto& block = *m->layers[3]->as<BlockImpl>();
  auto x = torch::randn({29, m->config().d_model}) * 3;
  ExpectMatches(ScoreRoutedTokens(block, x.requires_grad_()), TorchScores(block, x.detach()), 1e-5);
}

TEST(RoutedRows, AddsTheScaledDeltaAtTheComputingRowsOnly) {
  torch::manual_seed(5);
  torch::NoGradGuard ng;
  RoutedTokens t;
  const int64_t N = 9, d = 20;
  for (int64_t i = 0; i < N; ++i) {
    t.router.push_back(0.1f * static_cast<float>(i) - 0.3f);
    t.computes.push_back(i % 3 == 1 ? 1 : 0);
    if (i % 3 == 1) t.rows.push_back(i);
  }
  auto x = torch::randn({N, d});
  auto delta = torch::randn({static_cast<int64_t>(t.rows.size()), d});
  auto idx = torch::tensor(t.rows);
  auto r = torch::tensor(t.router);
  auto want = x.index_add(0, idx, delta * r.index_select(0, idx).unsqueeze(-1));
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    auto got = AddRoutedDelta(x.clone().to(dtype), t, delta.to(dtype));
    EXPECT_TRUE(torch::allclose(got.to(torch::kFloat), want, dtype == torch::kFloat ? 1e-6 : 2e-2, dtype == torch::kFloat ? 1e-6 : 2e-2));
  }
  // bf16 rounds where torch's bf16 ops do: the scale, the product, the sum.
  auto xb = x.to(torch::kBFloat16), db = delta.to(torch::kBFloat16);
  auto want_bf16 = xb.index_add(0, idx, db * r.index_select(0, idx).to(torch::kBFloat16).unsqueeze(-1));
  EXPECT_TRUE(torch::equal(AddRoutedDelta(xb.clone(), t, db), want_bf16));
  auto in_place = x.clone();
  EXPECT_EQ(AddRoutedDelta(in_place, t, delta).data_ptr(), in_place.data_ptr()) << "f32: updated in place";
  EXPECT_TRUE(torch::equal(in_place.index_select(0, torch::tensor({0, 2, 3, 5, 6, 8})), x.index_select(0, torch::tensor({0, 2, 3, 5, 6, 8}))));
}

}  // namespace
}  // namespace modserve
