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
// Prefix caching shares blocks: a full block may sit in several sequences'
// tables (Share), and a cache may hold blocks no sequence uses any more
// (Hold/Unhold). A block returns to the pool when no table and no hold has
// it. Blocks only the cache holds count as free: when an append finds the
// pool itself short, it asks the evictor to drop cache entries until it is
// not. Appends never write into a shared block (shared blocks are full).
//
// Thread-safety: not thread-safe; the engine's step loop owns it.
#pragma once

#include <cstdint>
#include <functional>
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
  // Starts the empty (id, layer) with `blocks`, all full and held by the
  // cache or by other tables: the sequence's first blocks.size() * block_size tokens.
  Status Share(SeqId id, int64_t layer, const std::vector<int64_t>& blocks);

  // A cache's holds on a block in use (Hold) and their release (Unhold).
  void Hold(int64_t block);
  void Unhold(int64_t block);
  // Pins a held block as if a table had it, so no eviction frees it.
  void Pin(int64_t block) { AddUse(block, -1); }
  void Unpin(int64_t block) { DropUse(block, -1); }
  // Drops one cache entry when the pool runs short; returns false when none is left.
  void set_evictor(std::function<bool()> evict_one) { evict_one_ = std::move(evict_one); }

  // Blocks Release(id) would add to free_blocks(): those of its tables no
  // other table (or pin) uses; 0 for an unknown id.
  int64_t ReleasableBlocks(SeqId id) const;
  int64_t NumTokens(SeqId id, int64_t layer) const;
  const std::vector<int64_t>& BlockTable(SeqId id, int64_t layer) const;
  // Appends the slots of every cached token of (id, layer), in order, to `out`.
  void AppendSlots(SeqId id, int64_t layer, std::vector<int64_t>* out) const;

  int64_t block_size() const { return opts_.block_size; }
  int64_t num_blocks() const { return opts_.num_blocks; }
  // Blocks an append can have: the pool's, plus those only the cache holds.
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()) + cached_only_; }
  int64_t cached_blocks() const { return cached_only_; }  // held by the cache alone
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
  // A table (at `layer`; -1: a pin) takes or drops one use of a block.
  void AddUse(int64_t block, int64_t layer);
  void DropUse(int64_t block, int64_t layer);
  void CheckBlock(int64_t block) const;

  KvBlockManagerOptions opts_;
  std::vector<int64_t> free_;  // stack of free block ids
  std::vector<int32_t> uses_;   // per block: tables (and pins) that have it
  std::vector<int32_t> holds_;  // per block: cache holds
  int64_t cached_only_ = 0;     // blocks with holds but no uses
  std::function<bool()> evict_one_;
  std::vector<int64_t> used_per_layer_;
  std::unordered_map<SeqId, std::vector<LayerCache>> seqs_;
};

}  // namespace modserve
