// Tests for prefix caching in the engine: a sequence started from a cached
// prefix (shared full blocks, copied partial rows, per-layer sparse row
// counts) gives the logits of one that ran every token, in MoD and both MoDE
// modes; the sequence that wrote the prefix is unaffected; cached prefixes
// give way when the pool is short; and nothing leaks under random use, nor
// when memory runs out while a step is recorded.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "engine/checkpoint.h"
#include "engine/engine_torch.h"
#include "engine/prefix_reuse.h"
#include "engine_test_util.h"
#include "failing_allocator.h"
#include "test_models.h"

namespace modserve {
namespace {

using modserve::testing::Bytes;
using modserve::testing::Incremental;
using modserve::testing::MakeEngine;
using modserve::testing::RelErr;

const std::string kText =
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced no "
    "evidence that any irregularities took place.";

EngineOptions Options(int64_t blocks, int64_t block_size, bool prefix_caching) {
  EngineOptions o;
  o.kv_blocks = blocks;
  o.block_size = block_size;
  o.prefix_caching = prefix_caching;
  return o;
}

MoDTransformer TinyModel(const std::string& mode) {
  ModelConfig c = testing::TinyConfig();
  c.mode = mode;
  if (mode != "mod") c.moe_experts = 4;
  torch::manual_seed(3);
  MoDTransformer m(c);
  m->eval();
  return m;
}

// Steps `tokens` from the sequence's position on, in one chunk: [n, V] logits.
torch::Tensor StepRest(Engine& e, SeqId id, const std::vector<int64_t>& tokens) {
  const int64_t from = e.NumTokens(id);
  SequenceChunk c{id, std::vector<int64_t>(tokens.begin() + from, tokens.end())};
  auto r = e.Step({c}, /*return_all_logits=*/true);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return torch::zeros({1});
  return torch::tensor(r->all_logits[0]).view({static_cast<int64_t>(c.tokens.size()), -1});
}

void ExpectCachedStartMatchesAFullRun(MoDTransformer model, int64_t block_size) {
  auto cached = MakeEngine(model, Options(2048, block_size, true));
  auto plain = MakeEngine(model, Options(2048, block_size, false));
  const std::vector<int64_t> first = Bytes(kText.substr(0, 45), true);  // 46 tokens
  std::vector<int64_t> second(first.begin(), first.begin() + 38);
  for (char ch : std::string("-- a different ending")) second.push_back(static_cast<unsigned char>(ch));

  // Sequence 1 runs `first` in uneven chunks and stays live.
  auto first_logits = Incremental(*cached, 1, first, 7);
  EXPECT_LE(RelErr(first_logits, Incremental(*plain, 1, first, 46)), 1e-4);

  // Sequence 2 starts from the shared 38 tokens' whole blocks.
  ASSERT_TRUE(cached->AddSequence(2).ok());
  const int64_t matched = cached->MatchPrefix(2, second, static_cast<int64_t>(second.size()));
  EXPECT_EQ(matched, 38 / block_size * block_size);
  EXPECT_EQ(cached->NumTokens(2), matched);
  auto rest = StepRest(*cached, 2, second);
  auto full = Incremental(*plain, 2, second, second.size());
  EXPECT_LE(RelErr(rest, full.slice(0, matched)), 1e-4);

  // Sequence 1 goes on decoding, unaffected by the sharing.
  for (int64_t t : {'!', ' ', 'Y', 'e', 's'}) {
    auto a = cached->Step({{1, {t}}});
    auto b = plain->Step({{1, {t}}});
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_LE(RelErr(torch::tensor(a->logits[0]), torch::tensor(b->logits[0])), 1e-4);
  }

  // Released prefixes stay; a whole cached prompt still leaves its last token to step.
  cached->Release(1);
  cached->Release(2);
  EXPECT_EQ(cached->Occupancy().used_blocks, 0);
  EXPECT_GT(cached->Occupancy().cached_blocks, 0);
  const std::vector<int64_t> exact(first.begin(), first.begin() + 2 * block_size);
  ASSERT_TRUE(cached->AddSequence(3).ok());
  EXPECT_EQ(cached->MatchPrefix(3, exact, 1000), static_cast<int64_t>(exact.size()) - block_size)
      << "a prompt of whole cached blocks matches all but its last block";
  EXPECT_LE(RelErr(StepRest(*cached, 3, exact), Incremental(*plain, 3, exact, exact.size()).slice(0, static_cast<int64_t>(exact.size()) - block_size)), 1e-4);
  EXPECT_EQ(cached->MatchPrefix(3, exact, 1000), 0) << "only a sequence that processed nothing takes a prefix";
  cached->Release(3);
  cached->ClearPrefixCache();
  EXPECT_EQ(cached->Occupancy().cached_blocks, 0);
  EXPECT_EQ(cached->Occupancy().used_blocks, 0);
}

TEST(EnginePrefixCache, ACachedStartMatchesAFullRunOnTheShippedModel) {
  auto m = LoadCheckpoint(std::string(MODSERVE_SOURCE_DIR) + "/models/mod-small");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ExpectCachedStartMatchesAFullRun(*m, 16);
}

TEST(EnginePrefixCache, ACachedStartMatchesAFullRunInEveryMode) {
  for (const std::string mode : {"mod", "staged", "integrated"}) {
    SCOPED_TRACE(mode);
    ExpectCachedStartMatchesAFullRun(TinyModel(mode), 4);
  }
}

TEST(EnginePrefixCache, WithCachingOffNothingMatches) {
  auto e = MakeEngine(TinyModel("mod"), Options(256, 4, false));
  const auto t = Bytes(kText.substr(0, 20), true);
  Incremental(*e, 1, t, 21);
  e->Release(1);
  ASSERT_TRUE(e->AddSequence(2).ok());
  EXPECT_EQ(e->MatchPrefix(2, t, 100), 0);
  EXPECT_EQ(e->Occupancy().cached_blocks, 0);
}

TEST(EnginePrefixCache, CachedPrefixesGiveWayWhenThePoolIsShort) {
  // Each 40-token sequence takes 10 blocks at each dense layer, fewer at the
  // routed ones: a 40-block pool holds one sequence, never two.
  auto e = MakeEngine(TinyModel("mod"), Options(40, 4, true));
  for (SeqId id = 0; id < 6; ++id) {
    std::vector<int64_t> t = Bytes(kText.substr(static_cast<size_t>(id) * 7, 39), true);
    ASSERT_TRUE(e->AddSequence(id).ok());
    EXPECT_EQ(e->MatchPrefix(id, t, 100), 0);
    auto r = e->Step({{id, t}});
    ASSERT_TRUE(r.ok()) << "sequence " << id << ": " << r.status().ToString();
    e->Release(id);
    EXPECT_GT(e->Occupancy().cached_blocks, 0);
    EXPECT_EQ(e->Occupancy().used_blocks, 0);
  }
  e->ClearPrefixCache();
  EXPECT_EQ(e->Occupancy().cached_blocks, 0);
}

TEST(EnginePrefixCache, RandomUseWithSharedPrefixesStaysExactAndNeverLeaks) {
  auto e = MakeEngine(TinyModel("mod"), Options(160, 4, true));
  auto reference = MakeEngine(TinyModel("mod"), Options(160, 4, false));
  std::mt19937 rng(7);
  const std::vector<std::string> stems = {"The jury said", "The jury found", "A grand jury", "The Fulton"};
  std::map<SeqId, std::vector<int64_t>> live;  // id -> tokens fed
  SeqId next = 0;
  int64_t matched_total = 0, checked = 0;
  for (int op = 0; op < 120; ++op) {
    const int kind = static_cast<int>(rng() % 5);
    if (kind <= 1 || live.empty()) {
      // A prompt from a stem and a random tail; the whole prompt in one step after any match.
      std::string text = stems[rng() % stems.size()];
      for (int i = static_cast<int>(rng() % 12); i > 0; --i) text += static_cast<char>('a' + rng() % 3);
      const std::vector<int64_t> prompt = Bytes(text, true);
      ASSERT_TRUE(e->AddSequence(next).ok());
      const int64_t m = e->MatchPrefix(next, prompt, static_cast<int64_t>(prompt.size()));
      matched_total += m;
      auto r = e->Step({{next, std::vector<int64_t>(prompt.begin() + m, prompt.end())}});
      if (!r.ok()) {
        ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
        e->Release(next++);
        continue;
      }
      ASSERT_TRUE(reference->AddSequence(next).ok());
      auto ref = reference->Step({{next, prompt}});
      ASSERT_TRUE(ref.ok());
      EXPECT_LE(RelErr(torch::tensor(r->logits[0]), torch::tensor(ref->logits[0])), 1e-4) << "prompt " << text << ", matched " << m;
      reference->Release(next);
      ++checked;
      live[next++] = prompt;
    } else if (kind == 2) {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      e->Release(it->first);
      live.erase(it);
    } else {
      std::vector<SequenceChunk> batch;
      for (auto& [id, fed] : live) {
        if (fed.size() < 60 && rng() % 2 == 0) batch.push_back({id, {static_cast<int64_t>('a' + rng() % 3)}});
      }
      if (batch.empty()) continue;
      auto r = e->Step(batch);
      if (r.ok()) {
        for (auto& c : batch) live[c.id].push_back(c.tokens[0]);
      } else {
        ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
      }
    }
    for (auto& [id, fed] : live) ASSERT_EQ(e->NumTokens(id), static_cast<int64_t>(fed.size()));
    const auto occ = e->Occupancy();
    int64_t per_layer = 0;
    for (int64_t u : occ.used_blocks_per_layer) per_layer += u;
    ASSERT_EQ(per_layer, occ.used_blocks) << "each block in use is one layer's, counted once however many tables share it";
  }
  EXPECT_GT(matched_total, 0) << "the stems were shared";
  EXPECT_GT(checked, 20);
  for (auto& [id, fed] : live) e->Release(id);
  EXPECT_EQ(e->Occupancy().used_blocks, 0);
  e->ClearPrefixCache();
  EXPECT_EQ(e->Occupancy().cached_blocks, 0);
}

TEST(PrefixReuse, RunningOutOfMemoryWhileRecordingStopsThatSequencesRecordingOnly) {
  // Record after a step of 12 tokens, failing at each of its allocations in
  // turn: it never throws, the prefixes it recorded are whole (a new sequence
  // attaches a multiple of the block size), a sequence it failed on records
  // nothing more, and once all is released and cleared no block is held.
  const ModelConfig cfg = testing::TinyConfig();  // layers 1 and 3 routed
  const int64_t bs = 4;
  std::vector<int64_t> tokens(16);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int64_t>(i) + 40;
  StepResult result;
  result.routes.emplace_back();
  for (int64_t i = 0; i < 12; ++i) result.routes[0].push_back((i % 2 == 0 ? 1u : 0u) | 2u);  // layer 1: even tokens; layer 3: all
  for (int64_t n = 0;; ++n) {
    ASSERT_LT(n, 1000) << "Record never ran without failing";
    KvCache kv({64, bs, cfg.n_layers}, cfg.n_heads, cfg.head_dim(), torch::TensorOptions().dtype(torch::kFloat));
    KvBlockManager& m = kv.manager();
    PrefixReuse reuse(&kv, cfg, {-1, 0, -1, 1});
    reuse.Add(1);
    ASSERT_TRUE(m.AddSequence(1).ok());
    for (int64_t l : {0, 2, 3}) ASSERT_TRUE(m.Append(1, l, 12).ok());
    ASSERT_TRUE(m.Append(1, 1, 6).ok());
    const std::vector<SequenceChunk> chunk = {{1, std::vector<int64_t>(tokens.begin(), tokens.begin() + 12)}};
    const std::vector<int64_t> starts = {0};
    testing::FailAllocationAfter(n);
    EXPECT_NO_THROW(reuse.Record(chunk, starts, result)) << "allocation " << n;
    const bool failed = testing::AllocationFailed();
    testing::StopFailingAllocations();
    const int64_t entries = reuse.entries();
    EXPECT_LE(entries, 3) << "allocation " << n;

    // The next 4 tokens complete a fourth prefix unless recording stopped.
    for (int64_t l = 0; l < cfg.n_layers; ++l) ASSERT_TRUE(m.Append(1, l, 4).ok());
    StepResult next;
    next.routes.push_back(std::vector<uint64_t>(4, 3u));
    reuse.Record({{1, std::vector<int64_t>(tokens.begin() + 12, tokens.end())}}, {12}, next);
    EXPECT_EQ(reuse.entries(), failed ? entries : 4) << "allocation " << n;

    reuse.Add(2);
    ASSERT_TRUE(m.AddSequence(2).ok());
    const int64_t attached = reuse.Attach(2, tokens, 16, "");
    EXPECT_EQ(attached % bs, 0) << "allocation " << n;
    EXPECT_EQ(attached, reuse.entries() * bs) << "allocation " << n;
    for (SeqId id : {1, 2}) {
      reuse.Release(id);
      m.Release(id);
    }
    reuse.Clear();
    EXPECT_EQ(m.free_blocks(), m.num_blocks()) << "allocation " << n;
    if (!failed) {
      EXPECT_EQ(entries, 3);
      break;
    }
  }
}

}  // namespace
}  // namespace modserve
