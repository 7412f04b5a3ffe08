#include "engine/prefix_cache.h"

#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>

namespace modserve {

namespace {
constexpr uint64_t kPrime = 0x100000001b3ULL;  // FNV-1a prime
}  // namespace

PrefixCache::PrefixCache(KvBlockManager* blocks, int64_t granularity) : blocks_(blocks), granularity_(granularity) {
  if (granularity <= 0) throw std::invalid_argument("PrefixCache: granularity must be positive, got " + std::to_string(granularity));
  std::random_device device;
  seed_ = (static_cast<uint64_t>(device()) << 32) ^ device();
}

uint64_t PrefixCache::RootHash(const std::string& salt) const {
  uint64_t h = seed_;
  for (unsigned char ch : salt) h = (h ^ ch) * kPrime;
  return (h ^ salt.size()) * kPrime;
}

PrefixCache::~PrefixCache() { Clear(); }

uint64_t PrefixCache::LinkHash(uint64_t parent_hash, const std::vector<int64_t>& tokens, int64_t begin) const {
  uint64_t h = parent_hash;
  for (int64_t i = begin; i < begin + granularity_; ++i) {
    auto t = static_cast<uint64_t>(tokens[static_cast<size_t>(i)]);
    for (int byte = 0; byte < 8; ++byte, t >>= 8) h = (h ^ (t & 0xff)) * kPrime;
  }
  return h;
}

int64_t PrefixCache::Find(uint64_t hash, int64_t parent, const std::vector<int64_t>& tokens, int64_t begin,
                          const std::string& salt) const {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return -1;
  const Entry& e = entries_.at(it->second);
  if (e.parent != parent || !std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin() + begin)) return -1;
  if (parent < 0 && e.salt != salt) return -1;
  return it->second;
}

void PrefixCache::Touch(int64_t id) {
  Entry& e = entries_.at(id);
  if (e.children == 0) leaves_.erase({e.last_use, id});
  e.last_use = ++clock_;
  if (e.children == 0) leaves_.insert({e.last_use, id});
}

PrefixMatch PrefixCache::Match(const std::vector<int64_t>& tokens, int64_t limit, const std::string& salt) {
  PrefixMatch m;
  limit = std::min<int64_t>(limit, static_cast<int64_t>(tokens.size()));
  uint64_t hash = RootHash(salt);
  int64_t parent = -1;
  for (int64_t end = granularity_; end <= limit; end += granularity_) {
    hash = LinkHash(hash, tokens, end - granularity_);
    const int64_t id = Find(hash, parent, tokens, end - granularity_, salt);
    if (id < 0) break;
    Touch(id);
    m.boundary_rows.push_back(entries_.at(id).rows);
    parent = id;
    m.length = end;
  }
  if (parent >= 0) {
    const Entry& e = entries_.at(parent);
    m.rows = e.rows;
    m.blocks = e.blocks;
  }
  return m;
}

void PrefixCache::Insert(SeqId id, const std::vector<int64_t>& tokens, const std::vector<std::vector<int64_t>>& boundary_rows,
                         const std::string& salt) {
  const int64_t bs = blocks_->block_size();
  uint64_t hash = RootHash(salt);
  int64_t parent = -1;
  for (size_t k = 0; k < boundary_rows.size(); ++k) {
    const int64_t begin = static_cast<int64_t>(k) * granularity_;
    if (begin + granularity_ > static_cast<int64_t>(tokens.size())) return;
    hash = LinkHash(hash, tokens, begin);
    int64_t found = Find(hash, parent, tokens, begin, salt);
    if (found < 0) {
      if (by_hash_.count(hash)) return;  // another prefix with this hash: leave it
      Entry e;
      e.hash = hash;
      e.parent = parent;
      if (parent < 0) e.salt = salt;
      e.tokens.assign(tokens.begin() + begin, tokens.begin() + begin + granularity_);
      e.rows = boundary_rows[k];
      for (size_t l = 0; l < e.rows.size(); ++l) {
        const std::vector<int64_t>& table = blocks_->BlockTable(id, static_cast<int64_t>(l));
        const auto n = static_cast<size_t>((e.rows[l] + bs - 1) / bs);
        if (n > table.size()) throw std::logic_error("PrefixCache: sequence " + std::to_string(id) + " holds fewer rows than recorded");
        e.blocks.emplace_back(table.begin(), table.begin() + static_cast<std::ptrdiff_t>(n));
      }
      // What can throw (the checks above, bad_alloc in the three inserts)
      // comes first and is undone on a throw; the holds and links, which
      // cannot throw, come last: a failed insert leaves neither a hold nor
      // a half-linked entry.
      found = next_id_;
      e.last_use = clock_ + 1;
      auto entry = entries_.emplace(found, std::move(e)).first;
      bool hashed = false;
      try {
        by_hash_.emplace(hash, found);
        hashed = true;
        leaves_.insert({clock_ + 1, found});
      } catch (...) {
        if (hashed) by_hash_.erase(hash);
        entries_.erase(entry);
        throw;
      }
      ++next_id_;
      ++clock_;
      for (const auto& layer : entry->second.blocks) {
        for (int64_t b : layer) blocks_->Hold(b);  // the blocks are in the table: cannot throw
      }
      if (parent >= 0) {
        Entry& p = entries_.at(parent);
        if (p.children++ == 0) leaves_.erase({p.last_use, parent});
      }
    } else {
      Touch(found);
      // Another routing of the same tokens (routing that is not bit-equal
      // across batches can flip a token near the threshold): this
      // sequence's longer prefixes are not linked under it, or a match
      // would pair the entry's row counts with this sequence's blocks.
      if (entries_.at(found).rows != boundary_rows[k]) return;
    }
    parent = found;
  }
}

bool PrefixCache::EvictOne() {
  if (leaves_.empty()) return false;
  const int64_t id = leaves_.begin()->second;
  leaves_.erase(leaves_.begin());
  auto it = entries_.find(id);
  for (const auto& layer : it->second.blocks) {
    for (int64_t b : layer) blocks_->Unhold(b);
  }
  by_hash_.erase(it->second.hash);
  const int64_t parent = it->second.parent;
  entries_.erase(it);
  if (parent >= 0) {
    Entry& p = entries_.at(parent);
    if (--p.children == 0) leaves_.insert({p.last_use, parent});
  }
  return true;
}

void PrefixCache::Clear() {
  while (EvictOne()) {
  }
}

}  // namespace modserve
