// MoDE (Mixture-of-Depths-and-Experts) in the model and the engine, staged
// and integrated: the config round-trips and names bad keys; expert routing
// in training respects each expert's capacity per sequence; the LM loss
// reaches both routers (staged) and the integrated router, never the
// predictor; incremental decoding through the engine equals the full forward
// under sampling routing; greedy tokens are the same alone and in a batch;
// staged layers keep the KV cache sparse, integrated ones keep it dense; a
// checkpoint round-trips, and a mode mismatch is a clear error.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include "engine/checkpoint.h"
#include "engine/engine_torch.h"
#include "engine/losses.h"
#include "engine/trainer.h"
#include "engine_test_util.h"
#include "test_models.h"

namespace modserve {
namespace {

using testing::Bytes;
using testing::ExpectSameTokensAloneAndInABatch;
using testing::Incremental;
using testing::MakeEngine;
using testing::RelErr;

ModelConfig ModeConfig(const std::string& mode, int64_t experts = 4, int64_t top_k = 1) {
  ModelConfig c = testing::TinyConfig();
  c.mode = mode;
  c.moe_experts = experts;
  c.moe_top_k = top_k;
  return c;
}

MoDTransformer RandomModel(const ModelConfig& c, uint64_t seed = 3) {
  torch::manual_seed(seed);
  MoDTransformer m(c);
  m->eval();
  return m;
}

const std::string kText =
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced no "
    "evidence that any irregularities took place.";

TEST(ModeConfig, RoundTripsAndNamesBadKeys) {
  for (const std::string mode : {"staged", "integrated"}) {
    ModelConfig c = ModeConfig(mode);
    auto back = ModelConfig::FromJson(c.ToJson(), "config.json");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->mode, mode);
    EXPECT_EQ(back->moe_experts, 4);
    EXPECT_EQ(back->moe_top_k, 1);
  }
  struct Case {
    std::function<void(ModelConfig*)> edit;
    std::string expect;
  } cases[] = {
      {[](auto* c) { c->mode = "moe"; }, "mode must be"},
      {[](auto* c) { c->moe_experts = 1; }, "moe.experts must be in [2, 64]"},
      {[](auto* c) { c->moe_top_k = 5; }, "moe.top_k must be in [1, moe.experts]"},
      {[](auto* c) { c->mode = "integrated"; c->moe_top_k = 2; }, "moe.top_k must be 1"},
      {[](auto* c) { c->mode = "integrated"; c->capacity = 1.0; }, "routing.capacity must be < 1"},
      {[](auto* c) { c->mode = "mod"; }, "moe.experts needs mode"},
      {[](auto* c) { c->routing_enabled = false; c->routed_layers.clear(); }, "needs routing.enabled"},
      {[](auto* c) { c->moe_capacity_factor = 0.5; }, "moe.capacity_factor"},
  };
  for (const auto& k : cases) {
    ModelConfig c = ModeConfig("staged");
    k.edit(&c);
    Status s = c.Validate();
    ASSERT_FALSE(s.ok()) << k.expect;
    EXPECT_NE(s.message().find(k.expect), std::string::npos) << s.message();
  }
  // From a file: a moe section beside mode "mod", named with the file.
  nlohmann::json j = ModeConfig("staged").ToJson();
  j["mode"] = "mod";
  auto r = ModelConfig::FromJson(j, "model/config.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "model/config.json: moe.experts needs mode \"staged\" or \"integrated\" (got 4 with mode \"mod\")");
}

// Each expert ran at most (staged) or exactly (integrated: expert choice)
// its capacity of tokens from each sequence.
void ExpectCapacity(const ExpertTrace& e, int64_t experts, bool exact) {
  ASSERT_TRUE(e.ran.defined());
  const int64_t B = e.capacity.size(0);
  for (int64_t b = 0; b < B; ++b) {
    auto rows = (e.group == b).unsqueeze(1);  // [N, 1]
    for (int64_t x = 0; x < experts; ++x) {
      const int64_t n = (e.ran.select(1, x).unsqueeze(1) & rows).sum().item<int64_t>();
      if (exact) {
        EXPECT_EQ(n, e.capacity[b].item<int64_t>()) << "sequence " << b << " expert " << x;
      } else {
        EXPECT_LE(n, e.capacity[b].item<int64_t>()) << "sequence " << b << " expert " << x;
      }
    }
  }
}

TEST(ModeModel, TrainingRoutingRespectsExpertCapacity) {
  for (const std::string mode : {"staged", "integrated"}) {
    SCOPED_TRACE(mode);
    ModelConfig c = ModeConfig(mode);
    c.moe_capacity_factor = 1.0;  // tight, so the caps bind
    MoDTransformer m = RandomModel(c);
    // Skew every expert router towards expert 0, so that capacity must drop tokens.
    for (int64_t l : c.routed_layers) {
      torch::NoGradGuard ng;
      auto& w = m->layers[l]->as<BlockImpl>()->moe->router->weight;  // [C, d]
      w.select(0, 0).fill_(0.5);
    }
    torch::manual_seed(11);
    auto tokens = torch::randint(32, 127, {4, 64}, torch::kLong);
    torch::NoGradGuard ng;
    ForwardOutput out = m->Forward(tokens, RouteMode::kTopK);
    ASSERT_EQ(out.routed.size(), c.routed_layers.size());
    int64_t dropped = 0;
    for (const auto& t : out.routed) {
      const ExpertTrace& e = t.experts;
      ExpectCapacity(e, c.moe_experts, /*exact=*/mode == "integrated");
      // Staged: ceil(cf x top_k / E) of the tokens the depth router took; integrated: capacity x S / E.
      const double share = mode == "staged" ? c.TopK(64) * 1.0 / 4 : c.capacity * 64 / 4;
      EXPECT_EQ(e.capacity[0].item<int64_t>(), static_cast<int64_t>(std::ceil(share - 1e-9)));
      EXPECT_TRUE(torch::equal(e.ran, e.train_assign));
      if (mode == "staged") {
        // The skewed router picks expert 0 for more tokens than it may take.
        dropped += (e.choice.select(1, 0) == 0).sum().item<int64_t>() - e.ran.select(1, 0).sum().item<int64_t>();
      } else {
        // Exactly `capacity` of the tokens run an expert (no token is taken twice here).
        EXPECT_TRUE(torch::equal(t.selected.flatten(), e.ran.any(1)));
        EXPECT_LE(t.selected.sum().item<int64_t>(), 4 * 4 * e.capacity[0].item<int64_t>());
        EXPECT_GE(t.selected.sum().item<int64_t>(), 4 * e.capacity[0].item<int64_t>());
      }
    }
    if (mode == "staged") {
      EXPECT_GT(dropped, 0) << "the skewed router overflowed expert 0, and capacity dropped tokens";
    }
    // Sampling routing has no capacity: each token runs its own top choice.
    ForwardOutput free = m->Forward(tokens, RouteMode::kPredictor);
    for (const auto& t : free.routed) {
      EXPECT_TRUE(torch::equal(t.experts.ran.select(1, 0), (t.experts.choice == 0).any(1)));
    }
  }
}

// Sum of |grad| of every parameter whose name contains `part`.
double GradMass(MoDTransformer& m, const std::string& part) {
  double s = 0;
  for (auto& p : m->named_parameters()) {
    if (p.key().find(part) != std::string::npos && p.value().grad().defined()) s += p.value().grad().abs().sum().item<double>();
  }
  return s;
}

TEST(ModeModel, LanguageModelLossReachesBothRoutersButNotThePredictors) {
  for (const std::string mode : {"staged", "integrated"}) {
    SCOPED_TRACE(mode);
    MoDTransformer m = RandomModel(ModeConfig(mode));
    m->train();
    torch::manual_seed(5);
    auto rows = torch::randint(32, 127, {4, 33}, torch::kLong);
    LossWeights lm_only;
    lm_only.predictor = 0;
    lm_only.balance = 0;
    Losses l = TrainingLosses(m, rows, lm_only);
    l.total.backward();
    EXPECT_GT(GradMass(m, ".moe.router."), 0) << "the expert router is on the gradient path";
    EXPECT_GT(GradMass(m, ".moe.experts."), 0);
    if (mode == "staged") {
      EXPECT_GT(GradMass(m, "layers.1.router."), 0) << "the depth router is on the gradient path";
      EXPECT_EQ(GradMass(m, ".predictor."), 0) << "the predictor reads stopgrad(x)";
    } else {
      EXPECT_EQ(GradMass(m, ".predictor."), 0);
    }
    // The balance loss reaches the expert routers (and, through their inputs,
    // the layers below them), never the experts of the last routed layer.
    m->zero_grad();
    LossWeights balance_only;
    balance_only.predictor = 0;
    balance_only.balance = 1;
    balance_only.predictor = 1;  // integrated: the routing loss
    Losses b = TrainingLosses(m, rows, balance_only);
    (b.total - b.lm).backward();
    if (mode == "staged") {
      EXPECT_GT(b.balance.item<double>(), 0);
    } else {
      // The routing loss reads stopgrad(h): it reaches the expert routers and nothing else.
      EXPECT_GT(b.predictor.item<double>(), 0);
      double other = 0;
      for (auto& p : m->named_parameters()) {
        if (p.key().find(".moe.router.") == std::string::npos && p.value().grad().defined()) {
          other += p.value().grad().abs().sum().item<double>();
        }
      }
      EXPECT_EQ(other, 0);
    }
    EXPECT_GT(GradMass(m, ".moe.router."), 0);
    EXPECT_EQ(GradMass(m, "layers.3.moe.experts."), 0);
  }
}

TEST(ModeEngine, IncrementalDecodingMatchesTheFullForward) {
  for (const std::string mode : {"staged", "integrated"}) {
    SCOPED_TRACE(mode);
    MoDTransformer m = RandomModel(ModeConfig(mode));
    auto tokens = Bytes(kText.substr(0, 60), true);
    torch::Tensor full;
    {
      torch::NoGradGuard ng;
      full = m->Forward(torch::tensor(tokens).unsqueeze(0), RouteMode::kPredictor).logits[0];  // [S, V]
    }
    auto engine = MakeEngine(m);
    auto inc = Incremental(*engine, 1, tokens, 1);
    EXPECT_LE(RelErr(inc, full), 1e-4);
    auto chunked = Incremental(*engine, 2, tokens, 9);
    EXPECT_LE(RelErr(chunked, full), 1e-4);
    const auto occ = engine->Occupancy();
    if (mode == "staged") {
      EXPECT_LT(occ.used_blocks_per_layer[1], occ.used_blocks_per_layer[0]) << "skipping tokens write no K/V";
    } else {
      EXPECT_EQ(occ.used_blocks_per_layer[1], occ.used_blocks_per_layer[0]) << "every token attends in integrated";
    }
  }
}

TEST(ModeEngine, StatsCountEveryExpertAndMatchTheRoutes) {
  for (const std::string mode : {"staged", "integrated"}) {
    SCOPED_TRACE(mode);
    auto engine = MakeEngine(RandomModel(ModeConfig(mode, 4, mode == "staged" ? 2 : 1)));
    ASSERT_TRUE(engine->AddSequence(1).ok());
    auto r = engine->Step({{1, Bytes(kText.substr(0, 50), true)}});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    int ordinal = 0;
    for (const auto& l : r->stats.layers) {
      if (!l.routed) {
        EXPECT_TRUE(l.expert_tokens.empty());
        continue;
      }
      ASSERT_EQ(l.expert_tokens.size(), 4u);
      int64_t assigned = 0;
      for (int64_t n : l.expert_tokens) assigned += n;
      // Staged: every token the layer took went to top_k = 2 experts;
      // integrated: every token that did not pick the no-op ran one.
      EXPECT_EQ(assigned, mode == "staged" ? 2 * l.computed : l.computed);
      int64_t from_routes = 0;
      for (uint64_t mask : r->routes[0]) from_routes += (mask >> ordinal) & 1;
      EXPECT_EQ(from_routes, l.computed);
      EXPECT_EQ(l.computed + l.skipped, r->stats.tokens);
      ++ordinal;
    }
  }
}

TEST(ModeEngine, GreedyTokensAreTheSameAloneAndInABatch) {
  for (const std::string mode : {"staged", "integrated"}) {
    SCOPED_TRACE(mode);
    MoDTransformer m = RandomModel(ModeConfig(mode));
    std::vector<std::vector<int64_t>> prompts;
    std::vector<int64_t> max_tokens;
    std::vector<int> join;
    for (int i = 0; i < 16; ++i) {
      prompts.push_back(Bytes(kText.substr(static_cast<size_t>(i * 5), static_cast<size_t>(3 + (i * 7) % 25)), true));
      max_tokens.push_back(4 + (i * 5) % 13);
      join.push_back((i * 3) % 11);
    }
    ExpectSameTokensAloneAndInABatch(m, prompts, max_tokens, join);
  }
}

TEST(ModeCheckpoint, RoundTripsAndAMismatchIsAClearError) {
  MoDTransformer m = RandomModel(ModeConfig("staged"));
  const std::string dir = testing::TempDir("mode_checkpoint");
  ASSERT_TRUE(SaveCheckpoint(m, dir).ok());
  auto back = LoadCheckpoint(dir);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ((*back)->config().mode, "staged");
  auto a = m->named_parameters(), b = (*back)->named_parameters();
  for (auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  EXPECT_NE(b.find("layers.1.moe.experts.3.fc2.weight"), nullptr);

  // The same weights under a config that says "mod": the experts are unexpected.
  ModelConfig as_mod = m->config();
  as_mod.mode = "mod";
  as_mod.moe_experts = 0;
  std::ofstream(dir + "/config.json") << as_mod.ToJson().dump(2);
  auto wrong = LoadCheckpoint(dir);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("is missing"), std::string::npos) << wrong.status().message();
  // A config with more experts than the weights hold: the expert router's shape says so.
  ModelConfig more = m->config();
  more.moe_experts = 6;
  std::ofstream(dir + "/config.json") << more.ToJson().dump(2);
  auto missing = LoadCheckpoint(dir);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("\"layers.1.moe.router.weight\" has shape [4, 32] but the config implies [6, 32]"),
            std::string::npos)
      << missing.status().message();
}

TEST(ModeModel, ParameterCountFromTheConfigMatchesTheBuiltModel) {
  for (const ModelConfig& c : {testing::TinyConfig(), testing::TinyConfig(/*routed=*/false), ModeConfig("staged"),
                               ModeConfig("integrated", 3)}) {
    MoDTransformer m(c);
    int64_t built = 0;
    for (const auto& p : m->parameters()) built += p.numel();
    EXPECT_EQ(MoDTransformerImpl::ParameterCount(c), static_cast<double>(built)) << c.mode << ", routed " << c.routing_enabled;
  }
}

TEST(ModeModel, FlopsPerTokenFollowTheMode) {
  ModelConfig mod = testing::TinyConfig(), staged = ModeConfig("staged"), integrated = ModeConfig("integrated");
  const double f = 0.25;
  const double a = MoDTransformerImpl::ForwardFlopsPerToken(mod, 64, f);
  const double s = MoDTransformerImpl::ForwardFlopsPerToken(staged, 64, f);
  const double i = MoDTransformerImpl::ForwardFlopsPerToken(integrated, 64, f);
  EXPECT_GT(s, a);  // the expert router on top of MoD's work
  EXPECT_LT(s, a * 1.05);
  EXPECT_GT(i, s);  // every token attends at the routed layers
}

}  // namespace
}  // namespace modserve
