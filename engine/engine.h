// Engine: batched MoD (and MoDE) decoding over a sparse paged KV cache (DESIGN §2).
//
// One entry point, Step(), runs a ragged batch of (sequence, new tokens)
// chunks: a decode token and a prefill chunk are the same thing. Per routed
// layer the predictor decides, token by token, who computes; the computing
// tokens of all sequences are gathered into one matrix for the projections
// and the MLP; attention runs per sequence over that sequence's K/V at that
// layer; the result, scaled by the router weight, is added back. Tokens that
// skip a layer write no K/V there. A routed layer no token computes is
// skipped whole. In MoDE the MLP of a routed layer is a mixture of experts:
// each expert runs one matmul over the rows routed to it from every sequence
// ("integrated" layers attend with every token, so their K/V are dense).
//
// A Step either applies completely or, on error (e.g. RESOURCE_EXHAUSTED when
// the KV pool runs out), changes nothing: sequences keep their state.
//
// This header is torch-free so the server can include it.
//
// Thread-safety: not thread-safe. One thread (the step loop) owns an Engine.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/kv_block_manager.h"
#include "engine/model_config.h"
#include "engine/status.h"

namespace modserve {

struct EngineOptions {
  int64_t kv_blocks = 4096;   // blocks in the KV pool (shared by all layers)
  int64_t block_size = 16;    // tokens per block
  std::string device = "cpu"; // "cpu" or "cuda"
  std::string dtype = "float32";  // weights and activations: "float32" or "bfloat16"
                                  // (bfloat16 runs matmuls through oneDNN; norms, softmax and
                                  // logits stay float32)
  std::string kv_dtype = "auto";  // KV cache: "auto" (= dtype), "float32" or "bfloat16"
                                  // (bfloat16 halves KV bytes: twice the tokens in the same
                                  // pool, and decode attention reads half the bytes)
  int threads = 0;            // threads of the engine's own kernels: the few-row GEMM and decode
                              // attention, most of a decode step (0: one per hardware thread)
  int torch_threads = 0;      // LibTorch intra-op threads: everything else, e.g. long prefill
                              // chunks' general GEMM (0: the same as threads). Both counts are
                              // process-wide settings.
  // Prefix caching: prefixes (in whole blocks of tokens) that sequences ran
  // stay in the pool after release, until their blocks are needed, and
  // MatchPrefix starts a new sequence from the longest one it begins with.
  bool prefix_caching = false;
};

struct SequenceChunk {
  SeqId id = 0;
  std::vector<int64_t> tokens;  // the new tokens of this sequence in this step (>= 1)
};

struct LayerStepStats {
  int64_t layer = 0;
  bool routed = false;
  // Tokens that went through the block, and tokens that passed it by on the
  // residual path (integrated MoDE: tokens that ran an MLP expert, and those
  // the no-op expert took; all of them attended).
  int64_t computed = 0;
  int64_t skipped = 0;
  // MoDE: rows each MLP expert ran (size moe.experts); empty otherwise.
  std::vector<int64_t> expert_tokens = {};
  // Predictor vs top-k on prefill chunks (>= kAgreementMinChunk tokens), where
  // both decisions are known: the top-k routing takes the ceil(C * S) tokens of
  // the chunk with the largest router weights. Tokens compared, and how many of
  // them the predictor routed the same way.
  int64_t agreement_tokens = 0;
  int64_t agreement_matches = 0;
};
inline constexpr int64_t kAgreementMinChunk = 8;

struct StepStats {
  int64_t tokens = 0;
  int64_t sequences = 0;
  std::vector<LayerStepStats> layers;  // one per layer
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_free = 0;
};

struct StepResult {
  // Per chunk, in batch order: logits of the chunk's last token [vocab].
  std::vector<std::vector<float>> logits;
  // Per chunk, only when asked for: logits of every token, row-major [n_tokens * vocab].
  std::vector<std::vector<float>> all_logits;
  // Per chunk, per token: bit i set iff the token computed the i-th routed layer.
  std::vector<std::vector<uint64_t>> routes;
  StepStats stats;
};

struct KvOccupancy {
  int64_t block_size = 0;
  int64_t total_blocks = 0;
  int64_t used_blocks = 0;
  std::vector<int64_t> used_blocks_per_layer;
  int64_t cached_blocks = 0;  // held only by the prefix cache: counted free, evicted on demand
  int64_t bytes_per_block = 0;  // K and V of block_size tokens of one layer
};

class Engine {
 public:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Loads a checkpoint directory and prepares the KV pool.
  static StatusOr<std::unique_ptr<Engine>> Load(const std::string& model_dir, const EngineOptions& opts);

  const ModelConfig& config() const;
  Status AddSequence(SeqId id);
  void Release(SeqId id);  // returns the sequence's KV blocks; no-op for unknown ids
  int64_t NumTokens(SeqId id) const;  // tokens (positions) the sequence has processed; -1 if unknown
  // With prefix caching: gives the new sequence `id` (nothing processed yet)
  // the cached K/V of the longest prefix of tokens[0, limit) that a sequence
  // with the same `cache_salt` ran, at most tokens.size() - 1 tokens (the
  // last one is stepped for its logits), in whole blocks; returns its length,
  // now the sequence's position (0: nothing cached, caching off, or the pool
  // is short). The sequence's prefixes are cached under `cache_salt` (a
  // sequence never matched: under "").
  int64_t MatchPrefix(SeqId id, const std::vector<int64_t>& tokens, int64_t limit, const std::string& cache_salt = "");
  void ClearPrefixCache();  // drops every cached prefix (their blocks return to the pool)
  bool prefix_caching() const;

  StatusOr<StepResult> Step(const std::vector<SequenceChunk>& batch, bool return_all_logits = false);

  KvOccupancy Occupancy() const;
  // KV blocks releasing sequence `id` would free (not those it shares with
  // other sequences); 0 for an unknown id.
  int64_t ReleasableBlocks(SeqId id) const;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace modserve
