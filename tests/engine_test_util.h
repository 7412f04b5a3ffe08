// Helpers shared by the engine tests: an engine over a model, incremental
// feeding of a sequence, a greedy batch runner where requests join at
// different steps, and the batch-invariance check built on it.
//
// Thread-safety: test helpers; one thread.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine_torch.h"
#include "engine/generation_state.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

namespace modserve::testing {

inline std::unique_ptr<Engine> MakeEngine(MoDTransformer model, const EngineOptions& o) {
  auto e = CreateEngine(model, o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(e).value();
}

inline std::unique_ptr<Engine> MakeEngine(MoDTransformer model, int64_t blocks = 4096, int64_t block_size = 16) {
  EngineOptions o;
  o.kv_blocks = blocks;
  o.block_size = block_size;
  return MakeEngine(model, o);
}

inline std::vector<int64_t> Bytes(const std::string& s, bool bos) { return ByteTokenizer(256, 257).Encode(s, bos); }

inline double RelErr(const torch::Tensor& a, const torch::Tensor& ref) {
  return (a - ref).abs().max().item<double>() / ref.abs().max().item<double>();
}

// Logits of every position from feeding `tokens` in chunks of `chunk` tokens: [S, V].
inline torch::Tensor Incremental(Engine& e, SeqId id, const std::vector<int64_t>& tokens, size_t chunk) {
  EXPECT_TRUE(e.AddSequence(id).ok());
  std::vector<float> all;
  for (size_t i = 0; i < tokens.size(); i += chunk) {
    SequenceChunk c{id, std::vector<int64_t>(tokens.begin() + i, tokens.begin() + std::min(tokens.size(), i + chunk))};
    auto r = e.Step({c}, /*return_all_logits=*/true);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    all.insert(all.end(), r->all_logits[0].begin(), r->all_logits[0].end());
  }
  return torch::tensor(all).view({static_cast<int64_t>(tokens.size()), -1});
}

// Runs requests through the engine with greedy sampling; request i joins at
// step join[i]. Returns each request's generated tokens.
inline std::vector<std::vector<int64_t>> RunBatch(Engine& e, const std::vector<std::vector<int64_t>>& prompts,
                                           const std::vector<int64_t>& max_tokens, const std::vector<int>& join) {
  const size_t n = prompts.size();
  std::vector<GenerationState> states;
  for (size_t i = 0; i < n; ++i) states.emplace_back(StopCriteria{max_tokens[i], 257, {}});
  std::vector<bool> running(n, false), done(n, false);
  size_t finished = 0;
  for (int step = 0; finished < n && step < 10000; ++step) {
    std::vector<SequenceChunk> batch;
    std::vector<size_t> who;
    for (size_t i = 0; i < n; ++i) {
      if (done[i]) continue;
      if (!running[i] && join[i] <= step) {
        EXPECT_TRUE(e.AddSequence(static_cast<SeqId>(i)).ok());
        running[i] = true;
        batch.push_back({static_cast<SeqId>(i), prompts[i]});
        who.push_back(i);
      } else if (running[i]) {
        batch.push_back({static_cast<SeqId>(i), {states[i].tokens().back()}});
        who.push_back(i);
      }
    }
    if (batch.empty()) continue;
    auto r = e.Step(batch);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) break;
    for (size_t j = 0; j < who.size(); ++j) {
      const size_t i = who[j];
      Sampler greedy(SamplingParams{});
      if (states[i].Add(greedy.Sample(r->logits[j])) != FinishReason::kNone) {
        e.Release(static_cast<SeqId>(i));
        done[i] = true;
        running[i] = false;
        ++finished;
      }
    }
  }
  std::vector<std::vector<int64_t>> out;
  for (auto& s : states) out.push_back(s.tokens());
  return out;
}

// Batch invariance: runs the requests together (request i joining at step
// join[i]) and each alone on a fresh engine, expects the same greedy tokens
// and every block released after the batch. Returns the runs alone.
inline std::vector<std::vector<int64_t>> ExpectSameTokensAloneAndInABatch(MoDTransformer model,
                                                                          const std::vector<std::vector<int64_t>>& prompts,
                                                                          const std::vector<int64_t>& max_tokens,
                                                                          const std::vector<int>& join) {
  auto batched_engine = MakeEngine(model);
  auto batched = RunBatch(*batched_engine, prompts, max_tokens, join);
  EXPECT_EQ(batched_engine->Occupancy().used_blocks, 0) << "every finished request released its blocks";
  std::vector<std::vector<int64_t>> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone_engine = MakeEngine(model);
    alone.push_back(RunBatch(*alone_engine, {prompts[i]}, {max_tokens[i]}, {0})[0]);
    EXPECT_EQ(batched[i], alone.back()) << "request " << i;
  }
  return alone;
}

}  // namespace modserve::testing
