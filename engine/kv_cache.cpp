#include "engine/kv_cache.h"

namespace modserve {

KvCache::KvCache(const KvBlockManagerOptions& opts, int64_t n_heads, int64_t head_dim, const torch::TensorOptions& tensor_opts)
    : manager_(opts) {
  k_pool_ = torch::zeros({opts.num_blocks * opts.block_size, n_heads, head_dim}, tensor_opts);
  v_pool_ = torch::zeros_like(k_pool_);
}

void KvCache::Write(const std::vector<int64_t>& slots, const torch::Tensor& k, const torch::Tensor& v) {
  auto idx = torch::tensor(slots, torch::kLong).to(k_pool_.device());  // [n]
  k_pool_.index_copy_(0, idx, k.to(k_pool_.scalar_type()));
  v_pool_.index_copy_(0, idx, v.to(v_pool_.scalar_type()));
}

std::pair<torch::Tensor, torch::Tensor> KvCache::Gather(SeqId id, int64_t layer) const {
  std::vector<int64_t> slots;
  manager_.AppendSlots(id, layer, &slots);
  return GatherSlots(torch::tensor(slots, torch::kLong).to(k_pool_.device()));
}

std::pair<torch::Tensor, torch::Tensor> KvCache::GatherSlots(const torch::Tensor& slots) const {
  return {k_pool_.index_select(0, slots), v_pool_.index_select(0, slots)};
}

int64_t KvCache::bytes_per_block() const {
  return 2 * manager_.block_size() * k_pool_.size(1) * k_pool_.size(2) * static_cast<int64_t>(k_pool_.element_size());
}

}  // namespace modserve
