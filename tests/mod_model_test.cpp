// Tests for the MoD model: top-k routing, predictor routing, compaction with
// real positions, gradient paths of the two losses, the dense baseline, and
// skipping a layer no token computes.
#include <gtest/gtest.h>

#include "engine/losses.h"
#include "engine/mod_model.h"
#include "test_models.h"

namespace modserve {
namespace {

using modserve::testing::TinyConfig;

torch::Tensor RandomTokens(int64_t b, int64_t s, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, 256, {b, s}, torch::kLong);
}

bool AllZeroOrUndefined(const torch::Tensor& g) { return !g.defined() || g.abs().sum().item<double>() == 0.0; }

TEST(MoDModel, TopKRoutingSelectsExactlyKTokensPerSequence) {
  torch::manual_seed(1);
  MoDTransformer model(TinyConfig());
  const int64_t S = 40, k = TinyConfig().TopK(S);
  ASSERT_EQ(k, 10);
  auto out = model->Forward(RandomTokens(3, S, 2), RouteMode::kTopK);
  ASSERT_EQ(out.routed.size(), 2u);
  for (const auto& t : out.routed) {
    auto counts = t.selected.sum(1);
    for (int64_t b = 0; b < 3; ++b) EXPECT_EQ(counts[b].item<int64_t>(), k) << "layer " << t.layer;
    EXPECT_TRUE(torch::equal(t.selected, t.topk_mask));
    // The selected tokens are those with the largest router logits.
    for (int64_t b = 0; b < 3; ++b) {
      auto r = t.router_logits[b];
      auto sel = t.selected[b];
      EXPECT_GE(r.masked_select(sel).min().item<float>(), r.masked_select(~sel).max().item<float>());
    }
  }
  EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{3, S, 258}));
}

TEST(MoDModel, PredictorRoutingFollowsThePredictorSign) {
  torch::manual_seed(3);
  MoDTransformer model(TinyConfig());
  torch::NoGradGuard ng;
  auto out = model->Forward(RandomTokens(2, 30, 4), RouteMode::kPredictor);
  for (const auto& t : out.routed) EXPECT_TRUE(torch::equal(t.selected, t.predictor_logits > 0));
}

TEST(MoDModel, CompactSelectedListsPositionsInOrder) {
  auto sel = torch::tensor({0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0}, torch::kBool).view({2, 6});
  Compaction c = CompactSelected(sel);
  ASSERT_EQ(c.max_count, 3);
  EXPECT_TRUE(torch::equal(c.index[0], torch::tensor({1, 3, 4}, torch::kLong)));
  EXPECT_EQ(c.index[1][0].item<int64_t>(), 0);
  EXPECT_TRUE(torch::equal(c.valid, torch::tensor({1, 1, 1, 1, 0, 0}, torch::kBool).view({2, 3})));
  EXPECT_EQ(CompactSelected(torch::zeros({2, 5}, torch::kBool)).max_count, 0);
}

// A routed layer's selected tokens are computed at their real positions: the
// forward equals a hand-built compaction with real positions, and differs
// from one that renumbers the compacted tokens 0..K-1.
TEST(MoDModel, CompactedTokensKeepTheirRealPositions) {
  ModelConfig cfg = TinyConfig();
  cfg.n_layers = 1;
  cfg.routed_layers = {0};
  torch::manual_seed(5);
  MoDTransformer model(cfg);
  torch::NoGradGuard ng;
  // Sharpen attention and the router weight so that positions visibly matter.
  model->layers[0]->as<BlockImpl>()->wqkv->weight.mul_(30.0);
  model->layers[0]->as<BlockImpl>()->router->weight.mul_(100.0);
  const int64_t S = 48;
  auto tokens = RandomTokens(1, S, 6);
  auto logits = model->Forward(tokens, RouteMode::kTopK).logits;

  auto block = model->layers[0]->as<BlockImpl>();
  auto x = model->tok_emb(tokens);                                   // [1, S, d]
  auto r = block->router(x).squeeze(-1);                             // [1, S]
  auto idx = std::get<0>(std::get<1>(r.topk(cfg.TopK(S), 1)).sort(1));  // [1, K] real positions
  const int64_t K = idx.size(1);
  auto gidx = idx.unsqueeze(-1).expand({1, K, cfg.d_model});
  auto xs = x.gather(1, gidx);
  auto valid = torch::ones({1, K}, torch::kBool);
  auto rebuild = [&](const torch::Tensor& positions) {
    auto delta = block->Delta(xs, positions, valid) * r.gather(1, idx).unsqueeze(-1);
    return model->lm_head(model->final_norm(x.scatter_add(1, gidx, delta)));
  };
  auto real = rebuild(idx);
  auto renumbered = rebuild(torch::arange(K, torch::kLong).unsqueeze(0));
  const double scale = logits.abs().max().item<double>();
  EXPECT_LT((logits - real).abs().max().item<double>(), 1e-5 * scale);
  EXPECT_GT((logits - renumbered).abs().max().item<double>(), 1e-2 * scale) << "positions must matter";
  EXPECT_GT(idx[0][K - 1].item<int64_t>(), K - 1) << "the test needs a selected token past position K-1";
}

TEST(MoDModel, LanguageModelLossReachesRoutersButNotPredictors) {
  torch::manual_seed(7);
  MoDTransformer model(TinyConfig());
  auto rows = RandomTokens(2, 33, 8);
  auto out = model->Forward(rows.narrow(1, 0, 32), RouteMode::kTopK);
  auto l = ComputeLosses(out, rows.narrow(1, 1, 32), LossWeights{});
  l.lm.backward();
  for (auto& p : model->named_parameters()) {
    const std::string& n = p.key();
    if (n.find("predictor") != std::string::npos) {
      EXPECT_TRUE(AllZeroOrUndefined(p.value().grad())) << n;
    } else if (n.find("router") != std::string::npos) {
      ASSERT_TRUE(p.value().grad().defined()) << n;
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << n;
    }
  }
}

TEST(MoDModel, PredictorLossReachesOnlyPredictors) {
  torch::manual_seed(9);
  MoDTransformer model(TinyConfig());
  auto rows = RandomTokens(2, 33, 10);
  auto out = model->Forward(rows.narrow(1, 0, 32), RouteMode::kTopK);
  auto l = ComputeLosses(out, rows.narrow(1, 1, 32), LossWeights{});
  l.predictor.backward();
  int predictor_params = 0;
  for (auto& p : model->named_parameters()) {
    const std::string& n = p.key();
    if (n.find("predictor") != std::string::npos) {
      ++predictor_params;
      ASSERT_TRUE(p.value().grad().defined()) << n;
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << n;
    } else {
      EXPECT_TRUE(AllZeroOrUndefined(p.value().grad())) << n;
    }
  }
  EXPECT_EQ(predictor_params, 8);  // fc1, fc2 weight + bias, two routed layers
}

TEST(MoDModel, DenseBaselineHasNoRoutingAndComputesEveryToken) {
  torch::manual_seed(11);
  MoDTransformer dense(TinyConfig(/*routed=*/false));
  for (auto& p : dense->named_parameters()) {
    EXPECT_EQ(p.key().find("router"), std::string::npos);
    EXPECT_EQ(p.key().find("predictor"), std::string::npos);
  }
  torch::NoGradGuard ng;
  auto tokens = RandomTokens(2, 20, 12);
  auto a = dense->Forward(tokens, RouteMode::kTopK);
  auto b = dense->Forward(tokens, RouteMode::kPredictor);
  EXPECT_TRUE(a.routed.empty());
  EXPECT_TRUE(torch::equal(a.logits, b.logits));
  EXPECT_GT(MoDTransformerImpl::ForwardFlopsPerToken(TinyConfig(false), 64, 1.0),
            MoDTransformerImpl::ForwardFlopsPerToken(TinyConfig(true), 64, 0.25));
}

TEST(MoDModel, CausalPrefixLogitsDoNotDependOnLaterTokensUnderPredictorRouting) {
  torch::manual_seed(13);
  MoDTransformer model(TinyConfig());
  torch::NoGradGuard ng;
  auto tokens = RandomTokens(1, 40, 14);
  auto full = model->Forward(tokens, RouteMode::kPredictor).logits;
  auto prefix = model->Forward(tokens.narrow(1, 0, 25), RouteMode::kPredictor).logits;
  EXPECT_TRUE(torch::allclose(full.narrow(1, 0, 25), prefix, 1e-5, 1e-6));
}

TEST(MoDModel, ALayerNoTokenComputesIsSkippedWhole) {
  torch::manual_seed(15);
  MoDTransformer model(TinyConfig());
  torch::NoGradGuard ng;
  for (int64_t l : {1, 3}) {
    auto block = model->layers[l]->as<BlockImpl>();
    block->predictor->fc2->bias.fill_(-1e4);       // the predictor says "skip" for every token
    block->wqkv->weight.fill_(std::nanf(""));      // touching the block would poison the output
    block->fc1->weight.fill_(std::nanf(""));
  }
  auto out = model->Forward(RandomTokens(2, 30, 16), RouteMode::kPredictor);
  for (const auto& t : out.routed) EXPECT_EQ(t.selected.sum().item<int64_t>(), 0);
  EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>());
}

TEST(MoDModel, FusedInferenceRmsNormMatchesTheTrainingPath) {
  torch::manual_seed(9);
  RMSNorm norm(48, 1e-5);
  {
    torch::NoGradGuard no_grad;
    norm->weight.uniform_(0.5, 1.5);
  }
  auto x = torch::randn({2, 3, 48}) * 4;
  auto trained = norm(x);  // grad mode, weight requires grad: the torch ops
  ASSERT_TRUE(trained.requires_grad());
  auto plain = RmsNormalize(x.to(torch::kDouble), 1e-5);  // double: the torch ops
  torch::NoGradGuard no_grad;
  auto fused = norm(x);  // no grad, f32 on the CPU: one fused pass
  EXPECT_FALSE(fused.requires_grad());
  EXPECT_EQ(fused.sizes(), x.sizes());
  EXPECT_TRUE(torch::allclose(fused, trained.detach(), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(RmsNormalize(x, 1e-5).to(torch::kDouble), plain, 1e-5, 1e-6));
  // Non-contiguous input takes the fused path too.
  auto xt = x.transpose(0, 1);
  EXPECT_TRUE(torch::allclose(norm(xt), trained.detach().transpose(0, 1), 1e-5, 1e-6));
}

TEST(MoDModel, FusedBf16InferenceRmsNormMatchesTheTorchOpsToBf16Rounding) {
  torch::manual_seed(10);
  RMSNorm norm(48, 1e-5);
  {
    torch::NoGradGuard no_grad;
    norm->weight.uniform_(0.5, 1.5);
  }
  norm->to(torch::kBFloat16);
  auto x = (torch::randn({2, 3, 48}) * 4).to(torch::kBFloat16);
  auto ops = norm(x);  // grad mode, weight requires grad: the torch ops, rounding to bf16 after each
  torch::NoGradGuard no_grad;
  auto fused = norm(x);  // no grad, bf16 on the CPU: one fused pass, rounded once
  ASSERT_EQ(fused.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::allclose(fused.to(torch::kFloat), ops.detach().to(torch::kFloat), 1e-2, 1e-3));
}

}  // namespace
}  // namespace modserve
