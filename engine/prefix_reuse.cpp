#include "engine/prefix_reuse.h"

#include <algorithm>
#include <exception>
#include <new>

namespace modserve {

PrefixReuse::PrefixReuse(KvCache* kv, const ModelConfig& cfg, const std::vector<int64_t>& routed_ordinal)
    : kv_(kv), route_bit_(routed_ordinal), cache_(&kv->manager(), kv->manager().block_size()) {
  for (int64_t l = 0; l < cfg.n_layers; ++l) writes_all_.push_back(!cfg.SkipsAttention(l));
  kv_->manager().set_evictor([this] { return cache_.EvictOne(); });
}

PrefixReuse::~PrefixReuse() { kv_->manager().set_evictor(nullptr); }

void PrefixReuse::Record(const std::vector<SequenceChunk>& batch, const std::vector<int64_t>& starts, const StepResult& result) {
  for (size_t b = 0; b < batch.size(); ++b) {
    const SequenceChunk& c = batch[b];
    auto it = seqs_.find(c.id);
    if (it == seqs_.end() || !it->second.recording) continue;
    Seq& s = it->second;
    try {
      RecordChunk(s, c, starts[b], result.routes[b]);
    } catch (const std::bad_alloc&) {
      // Its tokens and boundary rows may now disagree: record no more of it
      // (the step itself applied; only the caching of this sequence stops).
      s.recording = false;
      s.tokens = {};
      s.boundary_rows = {};
    }
  }
}

void PrefixReuse::RecordChunk(Seq& s, const SequenceChunk& c, int64_t start, const std::vector<uint64_t>& routes) {
  const KvBlockManager& m = kv_->manager();
  const int64_t G = cache_.granularity(), L = static_cast<int64_t>(writes_all_.size());
  const auto n = static_cast<int64_t>(c.tokens.size());
  if ((start + n) / G == start / G) {  // no boundary in this chunk
    s.tokens.insert(s.tokens.end(), c.tokens.begin(), c.tokens.end());
    return;
  }
  // Rows per layer before the chunk, then walk its tokens.
  std::vector<int64_t> rows(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    int64_t wrote = 0;
    for (int64_t i = 0; i < n; ++i) wrote += Writes(l, routes[static_cast<size_t>(i)]);
    rows[static_cast<size_t>(l)] = m.NumTokens(c.id, l) - wrote;
  }
  for (int64_t i = 0; i < n; ++i) {
    s.tokens.push_back(c.tokens[static_cast<size_t>(i)]);
    for (int64_t l = 0; l < L; ++l) rows[static_cast<size_t>(l)] += Writes(l, routes[static_cast<size_t>(i)]);
    if ((start + i + 1) % G == 0) s.boundary_rows.push_back(rows);
  }
  cache_.Insert(c.id, s.tokens, s.boundary_rows, s.salt);
}

int64_t PrefixReuse::Attach(SeqId id, const std::vector<int64_t>& tokens, int64_t limit, const std::string& salt) {
  auto it = seqs_.find(id);
  if (it == seqs_.end() || !it->second.recording || !it->second.tokens.empty()) return 0;
  it->second.salt = salt;
  PrefixMatch match = cache_.Match(tokens, limit, salt);
  if (match.length == 0) return 0;
  KvBlockManager& m = kv_->manager();
  const int64_t bs = m.block_size(), L = static_cast<int64_t>(match.rows.size());
  // Share the full blocks; pin the partial ones, whose rows are copied.
  std::vector<int64_t> partial;  // per layer: the partial block, or -1
  int64_t copies = 0;
  for (int64_t l = 0; l < L; ++l) {
    const auto& blocks = match.blocks[static_cast<size_t>(l)];
    const int64_t rows = match.rows[static_cast<size_t>(l)], full = rows / bs;
    partial.push_back(rows % bs != 0 ? blocks[static_cast<size_t>(full)] : -1);
    if (partial.back() >= 0) {
      m.Pin(partial.back());
      ++copies;
    }
    (void)m.Share(id, l, std::vector<int64_t>(blocks.begin(), blocks.begin() + full));  // held blocks: cannot fail
  }
  bool ok = m.free_blocks() >= copies;
  try {
    std::vector<int64_t> from, to;
    for (int64_t l = 0; ok && l < L; ++l) {
      if (partial[static_cast<size_t>(l)] < 0) continue;
      const int64_t n = match.rows[static_cast<size_t>(l)] % bs;
      auto slots = m.Append(id, l, n);
      if (!slots.ok()) {
        ok = false;
        break;
      }
      for (int64_t r = 0; r < n; ++r) from.push_back(partial[static_cast<size_t>(l)] * bs + r);
      to.insert(to.end(), slots->begin(), slots->end());
    }
    if (ok && !from.empty()) {
      auto [k, v] = kv_->GatherSlots(torch::tensor(from, torch::kLong).to(kv_->device()));  // [n, H, hd] each
      kv_->Write(to, k, v);
    }
  } catch (const std::exception&) {  // torch's errors and any other: the pins and shares below are undone either way
    ok = false;
  }
  for (int64_t b : partial) {
    if (b >= 0) m.Unpin(b);
  }
  if (!ok) {
    for (int64_t l = 0; l < L; ++l) m.Truncate(id, l, 0);
    return 0;
  }
  it->second.tokens.assign(tokens.begin(), tokens.begin() + match.length);
  it->second.boundary_rows = std::move(match.boundary_rows);
  return match.length;
}

}  // namespace modserve
