// Tests for the batched engine step over the sparse paged KV cache:
// incremental decoding and chunked prefill against the full forward, batch
// invariance, the dense baseline against a plain transformer, all-or-nothing
// steps when the KV pool runs out, and no block leaks.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "engine/checkpoint.h"
#include "engine/engine_torch.h"
#include "engine/generation_state.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "engine_test_util.h"
#include "test_models.h"

namespace modserve {
namespace {

using modserve::testing::Bytes;
using modserve::testing::ExpectSameTokensAloneAndInABatch;
using modserve::testing::Incremental;
using modserve::testing::MakeEngine;
using modserve::testing::RelErr;
using modserve::testing::TinyConfig;

const std::string kShipped = std::string(MODSERVE_SOURCE_DIR) + "/models/mod-small";
const std::string kText =
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced no "
    "evidence that any irregularities took place. The jury further said in term-end presentments that the City "
    "Executive Committee, which had over-all charge of the election, deserves the praise and thanks of the City.";

MoDTransformer Shipped() {
  auto m = LoadCheckpoint(kShipped);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return *m;
}

TEST(EngineStep, IncrementalDecodingMatchesTheFullForward) {
  MoDTransformer model = Shipped();
  auto tokens = Bytes(kText.substr(0, 200), true);
  torch::Tensor full;
  {
    torch::NoGradGuard ng;
    full = model->Forward(torch::tensor(tokens).unsqueeze(0), RouteMode::kPredictor).logits[0];  // [S, V]
  }
  auto engine = MakeEngine(model);
  auto inc = Incremental(*engine, 1, tokens, 1);
  EXPECT_LE(RelErr(inc, full), 1e-4);
  // The KV cache is sparse: routed layers hold only the tokens that computed them.
  const auto occ = engine->Occupancy();
  EXPECT_LT(occ.used_blocks_per_layer[1], occ.used_blocks_per_layer[0]);
}

TEST(EngineStep, ChunkedPrefillEqualsOneShotPrefill) {
  MoDTransformer model = Shipped();
  auto tokens = Bytes(kText.substr(0, 200), true);
  auto engine = MakeEngine(model);
  auto one_shot = Incremental(*engine, 1, tokens, tokens.size());
  auto chunked = Incremental(*engine, 2, tokens, 7);
  EXPECT_LE(RelErr(chunked, one_shot), 1e-4);
  EXPECT_EQ(engine->NumTokens(1), static_cast<int64_t>(tokens.size()));
}

TEST(EngineStep, LayerStatsAddUpAndMatchTheRoutes) {
  auto engine = MakeEngine(Shipped());
  ASSERT_TRUE(engine->AddSequence(1).ok());
  auto r = engine->Step({{1, Bytes(kText.substr(0, 200), true)}});
  ASSERT_TRUE(r.ok());
  const auto& stats = r->stats;
  ASSERT_EQ(stats.layers.size(), 6u);
  int ordinal = 0;
  for (const auto& l : stats.layers) {
    EXPECT_EQ(l.computed + l.skipped, stats.tokens);
    if (!l.routed) {
      EXPECT_EQ(l.skipped, 0);
      continue;
    }
    int64_t from_routes = 0;
    for (uint64_t mask : r->routes[0]) from_routes += (mask >> ordinal) & 1;
    EXPECT_EQ(from_routes, l.computed);
    EXPECT_EQ(engine->Occupancy().used_blocks_per_layer[l.layer], (l.computed + 15) / 16);
    EXPECT_GT(l.skipped, l.computed) << "capacity 0.125: most tokens skip";
    ++ordinal;
  }
}

TEST(EngineStep, GreedyTokensAreTheSameAloneAndInABatchOf16) {
  MoDTransformer model = Shipped();
  std::vector<std::vector<int64_t>> prompts;
  std::vector<int64_t> max_tokens;
  std::vector<int> join;
  for (int i = 0; i < 16; ++i) {
    prompts.push_back(Bytes(kText.substr(static_cast<size_t>(i * 13), static_cast<size_t>(5 + (i * 11) % 60)), true));
    max_tokens.push_back(8 + (i * 7) % 25);
    join.push_back((i * 5) % 17);
  }
  const auto alone = ExpectSameTokensAloneAndInABatch(model, prompts, max_tokens, join);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(static_cast<int64_t>(alone[i].size()), max_tokens[i]) << "request " << i;
}

// A plain causal transformer written out directly from the dense model's weights.
torch::Tensor PlainTransformer(MoDTransformer& m, const std::vector<int64_t>& tokens) {
  torch::NoGradGuard ng;
  const ModelConfig& c = m->config();
  const int64_t S = static_cast<int64_t>(tokens.size()), H = c.n_heads, hd = c.head_dim();
  auto rms = [&](const torch::Tensor& x, const torch::Tensor& w) { return x / (x.pow(2).mean(-1, true) + c.norm_eps).sqrt() * w; };
  auto rope = [&](const torch::Tensor& x) {  // x: [S, H, hd]
    auto inv = torch::pow(c.rope_theta, -torch::arange(0, hd / 2, torch::kFloat) * 2.0 / hd);
    auto ang = torch::arange(S, torch::kFloat).unsqueeze(1) * inv;  // [S, hd/2]
    auto cs = ang.cos().unsqueeze(1), sn = ang.sin().unsqueeze(1);
    auto x1 = x.narrow(-1, 0, hd / 2), x2 = x.narrow(-1, hd / 2, hd / 2);
    return torch::cat({x1 * cs - x2 * sn, x1 * sn + x2 * cs}, -1);
  };
  auto x = m->tok_emb->weight.index_select(0, torch::tensor(tokens));  // [S, d]
  auto causal = torch::ones({S, S}).tril().to(torch::kBool);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    auto b = m->layers[l]->as<BlockImpl>();
    auto qkv = torch::matmul(rms(x, b->attn_norm->weight), b->wqkv->weight.t()).view({S, 3, H, hd});
    auto q = rope(qkv.select(1, 0)).permute({1, 0, 2}), k = rope(qkv.select(1, 1)).permute({1, 0, 2});
    auto v = qkv.select(1, 2).permute({1, 0, 2});
    auto att = torch::softmax((torch::matmul(q, k.transpose(1, 2)) / std::sqrt(double(hd))).masked_fill(~causal, -1e30), -1);
    x = x + torch::matmul(torch::matmul(att, v).permute({1, 0, 2}).reshape({S, -1}), b->wo->weight.t());
    auto h = torch::gelu(torch::matmul(rms(x, b->mlp_norm->weight), b->fc1->weight.t()));
    x = x + torch::matmul(h, b->fc2->weight.t());
  }
  return torch::matmul(rms(x, m->final_norm->weight), m->lm_head->weight.t());  // [S, V]
}

TEST(EngineStep, RoutingOffReproducesAPlainDenseTransformer) {
  torch::manual_seed(41);
  MoDTransformer dense(TinyConfig(/*routed=*/false));
  auto tokens = Bytes("routing off is a plain transformer", true);
  auto ref = PlainTransformer(dense, tokens);
  auto engine = MakeEngine(dense);
  EXPECT_LE(RelErr(Incremental(*engine, 1, tokens, 5), ref), 1e-4);
  for (int64_t used : engine->Occupancy().used_blocks_per_layer) EXPECT_EQ(used, (static_cast<int64_t>(tokens.size()) + 15) / 16);
}

TEST(EngineStep, AStepThatRunsOutOfBlocksChangesNothing) {
  // 6 layers, block size 4: a 10-token prefill needs 3 blocks at each dense layer.
  auto engine = MakeEngine(Shipped(), /*blocks=*/12, /*block_size=*/4);
  ASSERT_TRUE(engine->AddSequence(1).ok());
  ASSERT_TRUE(engine->AddSequence(2).ok());
  auto first = engine->Step({{1, Bytes("0123456789", true)}});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const int64_t used = engine->Occupancy().used_blocks;
  auto r = engine->Step({{2, Bytes("abcdefghij", true)}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(engine->Occupancy().used_blocks, used);
  EXPECT_EQ(engine->NumTokens(2), 0);
  engine->Release(1);
  auto again = engine->Step({{2, Bytes("abcdefghij", true)}});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(engine->NumTokens(2), 11);
}

TEST(EngineStep, BadBatchesAreRejectedClearly) {
  auto engine = MakeEngine(Shipped());
  ASSERT_TRUE(engine->AddSequence(1).ok());
  auto expect = [&](const std::vector<SequenceChunk>& b, const std::string& fragment) {
    auto r = engine->Step(b);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(fragment), std::string::npos) << r.status().message();
  };
  expect({}, "empty batch");
  expect({{9, {1}}}, "unknown sequence 9");
  expect({{1, {}}}, "no tokens");
  expect({{1, {1}}, {1, {2}}}, "twice");
  expect({{1, {300}}}, "token id 300");
  expect({{1, std::vector<int64_t>(257, 65)}}, "max_context");
  EXPECT_EQ(engine->NumTokens(1), 0);
}

TEST(EngineStep, NoBlocksLeakUnderRandomAddStepRelease) {
  auto engine = MakeEngine(Shipped(), /*blocks=*/400, /*block_size=*/4);
  std::mt19937 rng(5);
  std::map<SeqId, int64_t> live;  // id -> tokens fed
  SeqId next = 0;
  for (int op = 0; op < 150; ++op) {
    const int kind = static_cast<int>(rng() % 6);
    if (kind == 0 || live.empty()) {
      ASSERT_TRUE(engine->AddSequence(next).ok());
      live[next++] = 0;
    } else if (kind == 1) {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      engine->Release(it->first);  // possibly mid-prefill
      live.erase(it);
    } else {
      std::vector<SequenceChunk> batch;
      for (auto& [id, fed] : live) {
        const int64_t n = 1 + static_cast<int64_t>(rng() % 12);
        if (fed + n > 200 || rng() % 3 == 0) continue;
        std::vector<int64_t> toks;
        for (int64_t i = 0; i < n; ++i) toks.push_back(static_cast<int64_t>('a' + rng() % 26));
        batch.push_back({id, toks});
      }
      if (batch.empty()) continue;
      auto r = engine->Step(batch);
      if (r.ok()) {
        for (auto& c : batch) live[c.id] += static_cast<int64_t>(c.tokens.size());
      } else {
        ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
      }
    }
    for (auto& [id, fed] : live) ASSERT_EQ(engine->NumTokens(id), fed);
    const auto occ = engine->Occupancy();
    ASSERT_LE(occ.used_blocks, occ.total_blocks);
  }
  for (auto& [id, fed] : live) engine->Release(id);
  EXPECT_EQ(engine->Occupancy().used_blocks, 0);
}

TEST(EngineStep, Bfloat16EngineStaysCloseToFloat32AndHalvesTheKvBytes) {
  MoDTransformer f32_model = Shipped();
  MoDTransformer bf16_model = Shipped();  // a separate copy: the engine converts its model in place
  auto tokens = Bytes(kText.substr(0, 120), true);
  auto f32 = MakeEngine(f32_model);
  EngineOptions o;
  o.dtype = "bfloat16";
  auto bf16 = CreateEngine(bf16_model, o);
  ASSERT_TRUE(bf16.ok()) << bf16.status().ToString();
  auto a = Incremental(*f32, 1, tokens, 16);
  auto b = Incremental(**bf16, 1, tokens, 16);
  EXPECT_LE(RelErr(b, a), 0.1);
  EXPECT_EQ((*bf16)->Occupancy().bytes_per_block * 2, f32->Occupancy().bytes_per_block);
  o.dtype = "float16";
  EXPECT_EQ(CreateEngine(Shipped(), o).status().code(), StatusCode::kInvalidArgument);
}

TEST(EngineStep, Bfloat16KvCacheUnderAFloat32ModelStaysCloseAndHalvesTheKvBytes) {
  auto tokens = Bytes(kText.substr(0, 160), true);
  auto f32 = MakeEngine(Shipped());
  EngineOptions o;
  o.kv_dtype = "bfloat16";
  auto kv16 = CreateEngine(Shipped(), o);
  ASSERT_TRUE(kv16.ok()) << kv16.status().ToString();
  auto a = Incremental(*f32, 1, tokens, 1);
  auto b = Incremental(**kv16, 1, tokens, 1);  // decode steps read the bf16 pools in place
  const double err = RelErr(b, a);
  EXPECT_GT(err, 0.0) << "the cache really holds bf16";
  EXPECT_LE(err, 0.02);
  EXPECT_EQ((*kv16)->Occupancy().bytes_per_block * 2, f32->Occupancy().bytes_per_block);
  // Prefill chunks read the same rounded keys and values as decode steps.
  auto one_shot = Incremental(**kv16, 2, tokens, tokens.size());
  EXPECT_LE(RelErr(one_shot, b), 1e-4);
  o.kv_dtype = "int8";
  auto bad = CreateEngine(Shipped(), o);
  ASSERT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("kv_dtype"), std::string::npos) << bad.status().message();
}

TEST(EngineStep, CudaOnACpuOnlyBuildFailsAtStartWithAClearMessage) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is present";
  EngineOptions o;
  o.device = "cuda";
  auto e = Engine::Load(kShipped, o);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(e.status().message().find("cuda"), std::string::npos);
  o.device = "tpu";
  EXPECT_EQ(Engine::Load(kShipped, o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modserve
