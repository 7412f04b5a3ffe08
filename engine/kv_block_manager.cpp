#include "engine/kv_block_manager.h"

#include <stdexcept>

namespace modserve {

KvBlockManager::KvBlockManager(const KvBlockManagerOptions& opts)
    : opts_(opts),
      uses_(static_cast<size_t>(opts.num_blocks), 0),
      holds_(static_cast<size_t>(opts.num_blocks), 0),
      used_per_layer_(static_cast<size_t>(opts.n_layers), 0) {
  free_.reserve(static_cast<size_t>(opts.num_blocks));
  for (int64_t b = opts.num_blocks - 1; b >= 0; --b) free_.push_back(b);  // block 0 is handed out first
}

Status KvBlockManager::AddSequence(SeqId id) {
  if (seqs_.count(id)) return InvalidArgument("sequence " + std::to_string(id) + " already exists");
  seqs_.emplace(id, std::vector<LayerCache>(static_cast<size_t>(opts_.n_layers)));
  return Status::Ok();
}

void KvBlockManager::Release(SeqId id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  for (int64_t l = 0; l < opts_.n_layers; ++l) Truncate(id, l, 0);
  seqs_.erase(it);
}

int64_t KvBlockManager::ReleasableBlocks(SeqId id) const {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return 0;
  int64_t n = 0;
  for (const LayerCache& layer : it->second) {
    for (int64_t b : layer.blocks) n += uses_[static_cast<size_t>(b)] == 1;  // a block is in a layer's table once
  }
  return n;
}

KvBlockManager::LayerCache& KvBlockManager::At(SeqId id, int64_t layer) {
  auto it = seqs_.find(id);
  if (it == seqs_.end() || layer < 0 || layer >= opts_.n_layers) throw std::out_of_range("KvBlockManager: unknown sequence or layer");
  return it->second[static_cast<size_t>(layer)];
}

const KvBlockManager::LayerCache& KvBlockManager::At(SeqId id, int64_t layer) const {
  return const_cast<KvBlockManager*>(this)->At(id, layer);
}

int64_t KvBlockManager::BlocksNeeded(SeqId id, int64_t layer, int64_t n) const {
  const LayerCache& c = At(id, layer);
  const int64_t capacity = static_cast<int64_t>(c.blocks.size()) * opts_.block_size;
  const int64_t missing = c.tokens + n - capacity;
  return missing <= 0 ? 0 : (missing + opts_.block_size - 1) / opts_.block_size;
}

StatusOr<std::vector<int64_t>> KvBlockManager::Append(SeqId id, int64_t layer, int64_t n) {
  if (!HasSequence(id)) return InvalidArgument("unknown sequence " + std::to_string(id));
  const int64_t need = BlocksNeeded(id, layer, n);
  if (need > free_blocks()) {
    return Status::Error(StatusCode::kResourceExhausted, "KV cache full: layer " + std::to_string(layer) + " needs " +
                                                             std::to_string(need) + " blocks, " + std::to_string(free_blocks()) + " free");
  }
  while (static_cast<int64_t>(free_.size()) < need && evict_one_ && evict_one_()) {
  }
  if (static_cast<int64_t>(free_.size()) < need) throw std::logic_error("KvBlockManager: the evictor freed too few blocks");
  LayerCache& c = At(id, layer);
  for (int64_t i = 0; i < need; ++i) {
    const int64_t b = free_.back();
    free_.pop_back();
    c.blocks.push_back(b);
    AddUse(b, layer);
  }
  std::vector<int64_t> slots(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = c.tokens + i;
    slots[static_cast<size_t>(i)] = c.blocks[static_cast<size_t>(t / opts_.block_size)] * opts_.block_size + t % opts_.block_size;
  }
  c.tokens += n;
  return slots;
}

void KvBlockManager::Truncate(SeqId id, int64_t layer, int64_t n_tokens) {
  LayerCache& c = At(id, layer);
  if (n_tokens >= c.tokens) return;
  c.tokens = n_tokens < 0 ? 0 : n_tokens;
  const auto keep = static_cast<size_t>((c.tokens + opts_.block_size - 1) / opts_.block_size);
  while (c.blocks.size() > keep) {
    const int64_t b = c.blocks.back();
    c.blocks.pop_back();
    DropUse(b, layer);
  }
}

Status KvBlockManager::Share(SeqId id, int64_t layer, const std::vector<int64_t>& blocks) {
  if (!HasSequence(id)) return InvalidArgument("unknown sequence " + std::to_string(id));
  LayerCache& c = At(id, layer);
  if (c.tokens != 0) return InvalidArgument("sequence " + std::to_string(id) + " already holds tokens at layer " + std::to_string(layer));
  for (int64_t b : blocks) {
    CheckBlock(b);
    if (uses_[static_cast<size_t>(b)] == 0 && holds_[static_cast<size_t>(b)] == 0) {
      return InvalidArgument("block " + std::to_string(b) + " is free, not shared");
    }
  }
  for (int64_t b : blocks) {
    c.blocks.push_back(b);
    AddUse(b, layer);
  }
  c.tokens = static_cast<int64_t>(blocks.size()) * opts_.block_size;
  return Status::Ok();
}

void KvBlockManager::CheckBlock(int64_t block) const {
  if (block < 0 || block >= opts_.num_blocks) throw std::out_of_range("KvBlockManager: block " + std::to_string(block) + " out of range");
}

void KvBlockManager::AddUse(int64_t block, int64_t layer) {
  CheckBlock(block);
  const auto b = static_cast<size_t>(block);
  if (uses_[b]++ == 0) {
    if (holds_[b] > 0) --cached_only_;
    if (layer >= 0) ++used_per_layer_[static_cast<size_t>(layer)];
  }
}

void KvBlockManager::DropUse(int64_t block, int64_t layer) {
  CheckBlock(block);
  const auto b = static_cast<size_t>(block);
  if (uses_[b] <= 0) throw std::logic_error("KvBlockManager: block " + std::to_string(block) + " dropped more often than taken");
  if (--uses_[b] > 0) return;
  if (layer >= 0) --used_per_layer_[static_cast<size_t>(layer)];
  if (holds_[b] > 0) {
    ++cached_only_;
  } else {
    free_.push_back(block);
  }
}

void KvBlockManager::Hold(int64_t block) {
  CheckBlock(block);
  const auto b = static_cast<size_t>(block);
  if (uses_[b] == 0 && holds_[b] == 0) throw std::logic_error("KvBlockManager: cannot hold free block " + std::to_string(block));
  ++holds_[b];
}

void KvBlockManager::Unhold(int64_t block) {
  CheckBlock(block);
  const auto b = static_cast<size_t>(block);
  if (holds_[b] <= 0) throw std::logic_error("KvBlockManager: block " + std::to_string(block) + " released more often than held");
  if (--holds_[b] > 0 || uses_[b] > 0) return;
  --cached_only_;
  free_.push_back(block);
}

void KvBlockManager::AppendSlots(SeqId id, int64_t layer, std::vector<int64_t>* out) const {
  const LayerCache& c = At(id, layer);
  for (int64_t t = 0; t < c.tokens; ++t) out->push_back(c.blocks[static_cast<size_t>(t / opts_.block_size)] * opts_.block_size + t % opts_.block_size);
}

int64_t KvBlockManager::NumTokens(SeqId id, int64_t layer) const { return At(id, layer).tokens; }

const std::vector<int64_t>& KvBlockManager::BlockTable(SeqId id, int64_t layer) const { return At(id, layer).blocks; }

}  // namespace modserve
