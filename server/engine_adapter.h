// EngineAdapter: presents the real Engine to the scheduler as a StepEngine.
//
// Thread-safety: as Engine: one thread (the step loop) at a time.
#pragma once

#include <memory>

#include "engine/engine.h"
#include "server/step_engine.h"

namespace modserve {

class EngineAdapter final : public StepEngine {
 public:
  explicit EngineAdapter(std::unique_ptr<Engine> engine) : engine_(std::move(engine)) {}

  StepEngineInfo Info() const override {
    const ModelConfig& c = engine_->config();
    const KvOccupancy occ = engine_->Occupancy();
    StepEngineInfo info;
    info.n_layers = c.n_layers;
    for (int64_t l = 0; l < c.n_layers; ++l) {
      if (c.IsRouted(l)) info.routed_layers.push_back(l);  // layer order, as the engine's route bits
    }
    info.capacity = c.routing_enabled ? c.capacity : 1.0;
    info.routed_layers_keep_kv = c.routing_enabled && c.mode == "integrated";
    info.experts = c.routing_enabled ? c.moe_experts : 0;
    info.noop_expert = info.routed_layers_keep_kv;
    info.block_size = occ.block_size;
    info.total_blocks = occ.total_blocks;
    info.max_context = c.max_context;
    info.vocab_size = c.vocab_size;
    info.prefix_caching = engine_->prefix_caching();
    return info;
  }
  Status AddSequence(SeqId id) override { return engine_->AddSequence(id); }
  void Release(SeqId id) override { engine_->Release(id); }
  StatusOr<StepResult> Step(const std::vector<SequenceChunk>& batch, bool all_logits) override {
    return engine_->Step(batch, all_logits);
  }
  int64_t MatchPrefix(SeqId id, const std::vector<int64_t>& tokens, int64_t limit, const std::string& salt) override {
    return engine_->MatchPrefix(id, tokens, limit, salt);
  }
  int64_t CachedBlocks() const override { return engine_->Occupancy().cached_blocks; }
  int64_t ReleasableBlocks(SeqId id) const override { return engine_->ReleasableBlocks(id); }
  int64_t FreeBlocks() const override {
    const KvOccupancy occ = engine_->Occupancy();
    return occ.total_blocks - occ.used_blocks;
  }

  const Engine& engine() const { return *engine_; }

 private:
  std::unique_ptr<Engine> engine_;
};

}  // namespace modserve
