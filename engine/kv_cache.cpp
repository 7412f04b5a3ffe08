#include "engine/kv_cache.h"

#include <cstring>

#include "engine/bf16_bits.h"

namespace modserve {

namespace {

// Whether t [n, H, hd] can be copied into pool [slots, H, hd] row by row on
// the CPU: each row's H * hd values contiguous (q, k and v are views into one
// QKV row), no gradient, and t in the pool's dtype or f32 into a bf16 pool.
bool CopiesRows(const torch::Tensor& t, const torch::Tensor& pool, size_t n) {
  if (!t.device().is_cpu() || !pool.device().is_cpu() || t.requires_grad()) return false;
  if (t.dim() != 3 || t.size(0) != static_cast<int64_t>(n) || t.size(1) != pool.size(1) || t.size(2) != pool.size(2)) return false;
  if (t.stride(2) != 1 || t.stride(1) != t.size(2)) return false;
  const auto from = t.scalar_type(), to = pool.scalar_type();
  return from == to ? (to == torch::kFloat || to == torch::kBFloat16) : (from == torch::kFloat && to == torch::kBFloat16);
}

// pool[slots[i]] = t[i], converting f32 to bf16 (to nearest even, as torch's
// conversion rounds) where the pool is bf16.
// The slots must lie in the pool (Write checks them once for K and V).
void CopyRows(const std::vector<int64_t>& slots, const torch::Tensor& t, torch::Tensor& pool) {
  const int64_t row = pool.size(1) * pool.size(2);
  const auto esize = static_cast<int64_t>(t.element_size());
  const auto* src = static_cast<const char*>(t.data_ptr());
  auto* dst = static_cast<char*>(pool.data_ptr());
  const bool convert = t.scalar_type() != pool.scalar_type();
  for (size_t i = 0; i < slots.size(); ++i) {
    const char* from = src + static_cast<int64_t>(i) * t.stride(0) * esize;
    if (!convert) {
      std::memcpy(dst + slots[i] * row * esize, from, static_cast<size_t>(row * esize));
      continue;
    }
    const auto* f = reinterpret_cast<const float*>(from);
    auto* b = reinterpret_cast<uint16_t*>(dst) + slots[i] * row;
    for (int64_t j = 0; j < row; ++j) b[j] = FloatToBf16(f[j]);
  }
}

}  // namespace

KvCache::KvCache(const KvBlockManagerOptions& opts, int64_t n_heads, int64_t head_dim, const torch::TensorOptions& tensor_opts)
    : manager_(opts) {
  k_pool_ = torch::zeros({opts.num_blocks * opts.block_size, n_heads, head_dim}, tensor_opts);
  v_pool_ = torch::zeros_like(k_pool_);
}

void KvCache::Write(const std::vector<int64_t>& slots, const torch::Tensor& k, const torch::Tensor& v) {
  // At decode a layer writes a few dozen rows: a copy per row, where
  // index_copy_ (with the slot tensor and a conversion) cost 25-90 us a layer.
  if (CopiesRows(k, k_pool_, slots.size()) && CopiesRows(v, v_pool_, slots.size())) {
    const int64_t capacity = k_pool_.size(0);
    for (int64_t s : slots) TORCH_CHECK(s >= 0 && s < capacity, "KV slot ", s, " outside the pool's ", capacity);
    CopyRows(slots, k, k_pool_);
    CopyRows(slots, v, v_pool_);
    return;
  }
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
