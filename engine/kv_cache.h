// KvCache: tensor storage of the paged KV cache behind a KvBlockManager.
// K and V pools are [num_blocks * block_size, n_heads, head_dim]; a slot is a
// row. Keys are stored already rotated (RoPE at the token's real position).
//
// Thread-safety: not thread-safe; owned by the engine's step loop.
#pragma once

#include <utility>
#include <vector>

#include <torch/torch.h>

#include "engine/kv_block_manager.h"

namespace modserve {

class KvCache {
 public:
  KvCache(const KvBlockManagerOptions& opts, int64_t n_heads, int64_t head_dim, const torch::TensorOptions& tensor_opts);

  KvBlockManager& manager() { return manager_; }
  const KvBlockManager& manager() const { return manager_; }

  // Writes k, v [n, H, hd] into `slots` (n of them).
  void Write(const std::vector<int64_t>& slots, const torch::Tensor& k, const torch::Tensor& v);
  // All cached K and V of (id, layer), in append order: [L, H, hd] each.
  std::pair<torch::Tensor, torch::Tensor> Gather(SeqId id, int64_t layer) const;
  // K and V rows at `slots` [n] int64 on the cache's device: [n, H, hd] each.
  std::pair<torch::Tensor, torch::Tensor> GatherSlots(const torch::Tensor& slots) const;
  torch::Device device() const { return k_pool_.device(); }
  // The pools themselves, [num_blocks * block_size, H, hd] each.
  const torch::Tensor& k_pool() const { return k_pool_; }
  const torch::Tensor& v_pool() const { return v_pool_; }

  int64_t bytes_per_block() const;

 private:
  KvBlockManager manager_;
  torch::Tensor k_pool_, v_pool_;  // [num_blocks * block_size, H, hd]
};

}  // namespace modserve
