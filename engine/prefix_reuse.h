// PrefixReuse: the engine's side of prefix caching. It keeps each sequence's
// tokens and, at every block_size-th position, the K/V rows the sequence held
// per layer; after each step it records the prefixes that step completed in
// the PrefixCache, and it starts a new sequence from the longest cached
// prefix of its tokens: full blocks are shared, the rows of a partial block
// are copied into a block of the sequence's own (K/V rows are append-only,
// so the rows a prefix wrote never change while any entry lists them).
//
// Thread-safety: not thread-safe; the engine's step loop owns it.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "engine/kv_cache.h"
#include "engine/model_config.h"
#include "engine/prefix_cache.h"

namespace modserve {

class PrefixReuse {
 public:
  // `kv` outlives this; registers itself as the pool's evictor.
  // routed_ordinal: per layer, its route bit among the routed layers, or -1.
  PrefixReuse(KvCache* kv, const ModelConfig& cfg, const std::vector<int64_t>& routed_ordinal);
  ~PrefixReuse();

  void Add(SeqId id) { seqs_[id] = {}; }
  void Release(SeqId id) { seqs_.erase(id); }
  // After a step that applied: `starts[b]` is chunk b's first position.
  // Never throws bad_alloc: a sequence whose recording runs out of memory is
  // recorded no further (its cached prefixes so far stay whole and correct).
  void Record(const std::vector<SequenceChunk>& batch, const std::vector<int64_t>& starts, const StepResult& result);
  // Gives the new, empty sequence `id` the K/V of the longest prefix of
  // tokens[0, limit) cached under `salt`; returns its length (0: none, or the
  // pool cannot spare the blocks its partial rows need). The sequence's own
  // prefixes are recorded under `salt` from now on.
  int64_t Attach(SeqId id, const std::vector<int64_t>& tokens, int64_t limit, const std::string& salt);

  int64_t entries() const { return cache_.size(); }
  void Clear() { cache_.Clear(); }

 private:
  struct Seq {
    std::string salt;
    std::vector<int64_t> tokens;
    std::vector<std::vector<int64_t>> boundary_rows;  // per block_size-th position: rows per layer
    bool recording = true;                            // false after a recording ran out of memory
  };
  void RecordChunk(Seq& s, const SequenceChunk& c, int64_t start, const std::vector<uint64_t>& routes);
  // Whether a token with `route` wrote K/V at layer l.
  bool Writes(int64_t l, uint64_t route) const {
    const auto i = static_cast<size_t>(l);
    return writes_all_[i] || ((route >> route_bit_[i]) & 1) != 0;
  }

  KvCache* kv_;
  std::vector<bool> writes_all_;  // per layer: every token writes K/V (else: only those that compute it)
  std::vector<int64_t> route_bit_;  // per layer: its route bit (routed layers)
  PrefixCache cache_;
  std::unordered_map<SeqId, Seq> seqs_;
};

}  // namespace modserve
