// StepEngine: the part of the engine the scheduler drives. The real Engine
// is adapted to it by EngineAdapter; the scheduler's tests use a fake.
//
// Thread-safety: called only from the scheduler's step thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace modserve {

// What the scheduler needs to know about the model behind the engine.
struct StepEngineInfo {
  int64_t n_layers = 0;
  std::vector<int64_t> routed_layers;  // layer indices, in order (bit i of a route = routed_layers[i])
  double capacity = 1.0;               // expected compute fraction of a routed layer
  // Integrated MoDE: every token attends at the routed layers too (only the
  // MLP is routed), so their K/V are as dense as the other layers'.
  bool routed_layers_keep_kv = false;
  int64_t experts = 0;                 // MoDE: MLP experts per routed layer (0: none)
  bool noop_expert = false;            // integrated MoDE: routed-layer "skips" are no-op expert choices
  int64_t block_size = 16;
  int64_t total_blocks = 0;
  int64_t max_context = 0;
  int64_t vocab_size = 0;
  bool prefix_caching = false;  // MatchPrefix can find cached prefixes
};

class StepEngine {
 public:
  virtual ~StepEngine() = default;
  virtual StepEngineInfo Info() const = 0;
  virtual Status AddSequence(SeqId id) = 0;
  virtual void Release(SeqId id) = 0;
  // All-or-nothing: on error nothing changed (RESOURCE_EXHAUSTED: KV pool short).
  // With all_logits, StepResult::all_logits holds every token's logits too.
  virtual StatusOr<StepResult> Step(const std::vector<SequenceChunk>& batch, bool all_logits) = 0;
  virtual int64_t FreeBlocks() const = 0;  // blocks only the prefix cache holds included
  virtual int64_t CachedBlocks() const { return 0; }  // blocks only the prefix cache holds
  // Blocks Release(id) would add to FreeBlocks(): not those other sequences share.
  virtual int64_t ReleasableBlocks(SeqId id) const = 0;
  // Prefix caching: starts the new sequence `id` from the K/V of the longest
  // prefix of tokens[0, limit) cached under `salt` and returns its length (the
  // tokens the sequence then holds; 0: none); the sequence's own prefixes are
  // cached under `salt`. An engine without a prefix cache has none.
  virtual int64_t MatchPrefix(SeqId id, const std::vector<int64_t>& tokens, int64_t limit, const std::string& salt) {
    return 0;
  }
};

}  // namespace modserve
