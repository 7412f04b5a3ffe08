// KvBlockManager: the bookkeeping of the paged, sparse KV cache (no tensors).
//
// The cache is a pool of fixed-size blocks, each holding the K/V of
// `block_size` tokens of one layer of one sequence. Every (sequence, layer)
// pair has its own block table and token count: a token that skips a routed
// layer appends nothing there, so routed layers hold fewer blocks. Appends
// allocate blocks on demand and fail with RESOURCE_EXHAUSTED without changing
// anything when the pool is short; Truncate undoes appends (the engine rolls a
// failed step back with it); Release returns all of a sequence's blocks.
//
// Slots are flat indices block * block_size + offset into the storage.
//
// Thread-safety: not thread-safe; the engine's step loop owns it.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "engine/status.h"

namespace modserve {

using SeqId = int64_t;

struct KvBlockManagerOptions {
  int64_t num_blocks = 1024;
  int64_t block_size = 16;
  int64_t n_layers = 1;
};

class KvBlockManager {
 public:
  explicit KvBlockManager(const KvBlockManagerOptions& opts);

  Status AddSequence(SeqId id);
  bool HasSequence(SeqId id) const { return seqs_.count(id) != 0; }
  void Release(SeqId id);  // no-op for unknown ids

  // Blocks that appending n tokens at `layer` would take from the pool.
  int64_t BlocksNeeded(SeqId id, int64_t layer, int64_t n) const;
  // Appends n tokens at `layer`; returns their slots. On RESOURCE_EXHAUSTED nothing changed.
  StatusOr<std::vector<int64_t>> Append(SeqId id, int64_t layer, int64_t n);
  // Shrinks (id, layer) to n_tokens, returning emptied blocks to the pool.
  void Truncate(SeqId id, int64_t layer, int64_t n_tokens);

  int64_t NumTokens(SeqId id, int64_t layer) const;
  const std::vector<int64_t>& BlockTable(SeqId id, int64_t layer) const;
  // Appends the slots of every cached token of (id, layer), in order, to `out`.
  void AppendSlots(SeqId id, int64_t layer, std::vector<int64_t>* out) const;

  int64_t block_size() const { return opts_.block_size; }
  int64_t num_blocks() const { return opts_.num_blocks; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t used_blocks() const { return opts_.num_blocks - free_blocks(); }
  int64_t used_blocks(int64_t layer) const { return used_per_layer_[static_cast<size_t>(layer)]; }
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }

 private:
  struct LayerCache {
    std::vector<int64_t> blocks;
    int64_t tokens = 0;
  };
  LayerCache& At(SeqId id, int64_t layer);
  const LayerCache& At(SeqId id, int64_t layer) const;

  KvBlockManagerOptions opts_;
  std::vector<int64_t> free_;  // stack of free block ids
  std::vector<int64_t> used_per_layer_;
  std::unordered_map<SeqId, std::vector<LayerCache>> seqs_;
};

}  // namespace modserve
