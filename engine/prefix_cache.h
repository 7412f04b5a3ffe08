// PrefixCache: an index of the KV blocks that token prefixes left in the
// sparse paged cache, so a sequence that starts with a prefix some sequence
// already ran reuses its K/V instead of recomputing it (automatic prefix
// caching; no tensors here).
//
// An entry stands for the first `length` tokens of a sequence, `length` a
// multiple of the granularity. Under predictor routing what a prefix leaves in
// the cache depends only on its tokens (each token's route is decided from its
// own causal hidden state), but the number of K/V rows differs per layer: a
// routed layer holds only the prefix tokens that computed it. So an entry
// records, per layer, the row count and the blocks holding those rows; the
// last block may be partial (its first rows are the prefix's, later rows
// belong to whoever appended after), and a sequence that reuses the entry
// must copy those rows rather than share the block.
//
// Entries form a tree: an entry's parent is the entry one granularity shorter.
// Lookup hashes the chain of token groups and checks each link's own tokens
// and parent, so a hash collision can never hand out another prefix's K/V.
// A root also carries a salt: prefixes recorded under one salt are found only
// under the same salt (tenants that must not learn of each other's prompts).
// The hash starts from a per-process random seed, so a client cannot craft a
// prompt that collides with another's to keep it out of the cache.
// Each entry holds (KvBlockManager::Hold) every block it lists; eviction
// drops the least recently used leaf, so a reachable entry's parents stay.
//
// Thread-safety: not thread-safe; the engine's step loop owns it.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/kv_block_manager.h"

namespace modserve {

struct PrefixMatch {
  int64_t length = 0;                        // tokens matched, a multiple of the granularity (0: none)
  std::vector<int64_t> rows;                 // per layer: K/V rows the prefix holds there
  std::vector<std::vector<int64_t>> blocks;  // per layer: the blocks holding them, in order
  // Per matched boundary k (the prefix of (k + 1) * granularity tokens), per layer: its rows.
  std::vector<std::vector<int64_t>> boundary_rows;
};

class PrefixCache {
 public:
  // `blocks` outlives the cache; `granularity` is a positive token count.
  PrefixCache(KvBlockManager* blocks, int64_t granularity);
  ~PrefixCache();  // releases every hold
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  // The longest cached prefix of tokens[0, limit); marks its entries used.
  PrefixMatch Match(const std::vector<int64_t>& tokens, int64_t limit, const std::string& salt = "");
  // Records the prefixes of sequence `id` (which holds at least these rows)
  // ending at each boundary: boundary_rows[k][layer] are the rows of the
  // prefix of (k + 1) * granularity tokens. Entries already there are marked
  // used; at one whose rows differ from this sequence's (the same tokens
  // routed otherwise), recording stops: its descendants' blocks always
  // agree with its rows.
  // On a throw (bad_alloc), the entries recorded before it stay whole and the
  // one it was adding is not there: no hold, no link.
  void Insert(SeqId id, const std::vector<int64_t>& tokens, const std::vector<std::vector<int64_t>>& boundary_rows,
              const std::string& salt = "");
  // Drops the least recently used leaf; false when the cache is empty.
  bool EvictOne();
  void Clear();

  int64_t size() const { return static_cast<int64_t>(entries_.size()); }
  int64_t granularity() const { return granularity_; }

 private:
  struct Entry {
    uint64_t hash = 0;
    int64_t parent = -1;          // entry id, -1 for a root
    std::string salt;             // a root's salt
    std::vector<int64_t> tokens;  // this link's granularity tokens
    std::vector<int64_t> rows;
    std::vector<std::vector<int64_t>> blocks;
    int64_t children = 0;
    uint64_t last_use = 0;
  };
  uint64_t RootHash(const std::string& salt) const;
  // The hash of the link after `parent_hash` made of tokens[begin, begin + granularity).
  uint64_t LinkHash(uint64_t parent_hash, const std::vector<int64_t>& tokens, int64_t begin) const;
  // The entry for that link if it is exactly that link under `parent` (a
  // root: under `salt`); -1 otherwise.
  int64_t Find(uint64_t hash, int64_t parent, const std::vector<int64_t>& tokens, int64_t begin, const std::string& salt) const;
  void Touch(int64_t id);

  KvBlockManager* blocks_;
  int64_t granularity_;
  uint64_t seed_;
  int64_t next_id_ = 0;
  uint64_t clock_ = 0;
  std::unordered_map<int64_t, Entry> entries_;
  std::unordered_map<uint64_t, int64_t> by_hash_;
  std::set<std::pair<uint64_t, int64_t>> leaves_;  // (last_use, id) of entries without children
};

}  // namespace modserve
