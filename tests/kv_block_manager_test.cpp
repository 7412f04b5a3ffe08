// Tests for the paged KV block bookkeeping: allocation at block boundaries,
// all-or-nothing appends, truncation, release, no leaks under random use, and
// the shared blocks of prefix caching (uses, holds, pins, eviction on demand).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "engine/kv_block_manager.h"

namespace modserve {
namespace {

TEST(KvBlockManager, AllocatesAtBlockBoundariesPerLayer) {
  KvBlockManager m({/*num_blocks=*/8, /*block_size=*/4, /*n_layers=*/2});
  ASSERT_TRUE(m.AddSequence(7).ok());
  EXPECT_FALSE(m.AddSequence(7).ok());
  auto s = m.Append(7, 0, 5);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(m.BlockTable(7, 0).size(), 2u);
  EXPECT_EQ(m.used_blocks(0), 2);
  EXPECT_EQ(m.used_blocks(1), 0) << "a layer the tokens skipped holds nothing";
  const int64_t b0 = m.BlockTable(7, 0)[0], b1 = m.BlockTable(7, 0)[1];
  EXPECT_EQ(*s, (std::vector<int64_t>{b0 * 4, b0 * 4 + 1, b0 * 4 + 2, b0 * 4 + 3, b1 * 4}));
  EXPECT_EQ(m.BlocksNeeded(7, 0, 3), 0);
  EXPECT_EQ(m.BlocksNeeded(7, 0, 4), 1);
  ASSERT_TRUE(m.Append(7, 1, 1).ok());
  EXPECT_EQ(m.NumTokens(7, 1), 1);
  EXPECT_EQ(m.used_blocks(), 3);
  EXPECT_EQ(m.free_blocks(), 5);
}

TEST(KvBlockManager, ExhaustionChangesNothing) {
  KvBlockManager m({2, 4, 1});
  ASSERT_TRUE(m.AddSequence(1).ok());
  ASSERT_TRUE(m.Append(1, 0, 6).ok());
  auto r = m.Append(1, 0, 3);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(m.NumTokens(1, 0), 6);
  EXPECT_EQ(m.used_blocks(), 2);
  ASSERT_TRUE(m.Append(1, 0, 2).ok()) << "the rest of the last block is still usable";
  EXPECT_FALSE(m.Append(99, 0, 1).ok()) << "unknown sequence";
}

TEST(KvBlockManager, TruncateAndReleaseReturnBlocks) {
  KvBlockManager m({10, 4, 2});
  ASSERT_TRUE(m.AddSequence(1).ok());
  ASSERT_TRUE(m.Append(1, 0, 9).ok());
  ASSERT_TRUE(m.Append(1, 1, 2).ok());
  m.Truncate(1, 0, 4);
  EXPECT_EQ(m.NumTokens(1, 0), 4);
  EXPECT_EQ(m.used_blocks(0), 1);
  m.Release(1);
  EXPECT_EQ(m.used_blocks(), 0);
  EXPECT_EQ(m.free_blocks(), 10);
  EXPECT_FALSE(m.HasSequence(1));
  m.Release(1);  // idempotent
}

TEST(KvBlockManager, RandomUseNeverLeaksOrSharesBlocks) {
  const int64_t kBlocks = 64, kBs = 3, kLayers = 3;
  KvBlockManager m({kBlocks, kBs, kLayers});
  std::mt19937 rng(11);
  std::map<SeqId, std::vector<int64_t>> tokens;  // expected tokens per layer
  SeqId next = 0;
  for (int op = 0; op < 5000; ++op) {
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 2 || tokens.empty()) {
      ASSERT_TRUE(m.AddSequence(next).ok());
      tokens[next++] = std::vector<int64_t>(kLayers, 0);
    } else {
      auto it = std::next(tokens.begin(), static_cast<long>(rng() % tokens.size()));
      if (kind < 4) {
        m.Release(it->first);
        tokens.erase(it);
      } else {
        const int64_t layer = static_cast<int64_t>(rng() % kLayers), n = 1 + static_cast<int64_t>(rng() % 5);
        if (m.Append(it->first, layer, n).ok()) it->second[layer] += n;
      }
    }
    // Invariants: every used block belongs to exactly one table; counts add up.
    std::set<int64_t> owned;
    int64_t expected_used = 0;
    for (auto& [id, per_layer] : tokens) {
      for (int64_t l = 0; l < kLayers; ++l) {
        ASSERT_EQ(m.NumTokens(id, l), per_layer[l]);
        const auto& table = m.BlockTable(id, l);
        ASSERT_EQ(static_cast<int64_t>(table.size()), (per_layer[l] + kBs - 1) / kBs);
        for (int64_t b : table) ASSERT_TRUE(owned.insert(b).second) << "block " << b << " in two tables";
        expected_used += static_cast<int64_t>(table.size());
      }
    }
    ASSERT_EQ(m.used_blocks(), expected_used);
    ASSERT_EQ(m.used_blocks() + m.free_blocks(), kBlocks);
  }
  for (auto& [id, unused] : tokens) m.Release(id);
  EXPECT_EQ(m.used_blocks(), 0);
}

TEST(KvBlockManager, SharedBlocksReturnToThePoolWhenTheLastUseOrHoldGoes) {
  KvBlockManager m({6, 2, 1});
  ASSERT_TRUE(m.AddSequence(1).ok());
  ASSERT_TRUE(m.Append(1, 0, 5).ok());  // blocks a (full), b (full), c (1 row)
  const std::vector<int64_t> table = m.BlockTable(1, 0);
  for (int64_t b : table) m.Hold(b);
  EXPECT_EQ(m.free_blocks(), 3);
  EXPECT_EQ(m.cached_blocks(), 0) << "held blocks a table uses are not free";

  ASSERT_TRUE(m.AddSequence(2).ok());
  ASSERT_TRUE(m.Share(2, 0, {table[0], table[1]}).ok());
  EXPECT_EQ(m.NumTokens(2, 0), 4);
  EXPECT_EQ(m.used_blocks(0), 3) << "a block in two tables counts once";
  auto s = m.Append(2, 0, 1);
  ASSERT_TRUE(s.ok());
  EXPECT_NE(m.BlockTable(2, 0)[2], table[2]) << "an append never writes into another table's block";
  EXPECT_EQ(m.Share(2, 0, {table[0]}).code(), StatusCode::kInvalidArgument) << "only an empty layer takes shared blocks";

  EXPECT_EQ(m.ReleasableBlocks(1), 1) << "c alone: a and b are in 2's table too";
  EXPECT_EQ(m.ReleasableBlocks(2), 1) << "its own appended block";
  EXPECT_EQ(m.ReleasableBlocks(99), 0);
  m.Release(1);
  EXPECT_EQ(m.cached_blocks(), 1) << "c: held, in no table";
  EXPECT_EQ(m.free_blocks(), 3) << "2 in the pool, and c";
  m.Release(2);
  EXPECT_EQ(m.cached_blocks(), 3);
  EXPECT_EQ(m.free_blocks(), 6) << "blocks only the cache holds count as free";
  EXPECT_EQ(m.used_blocks(), 0);
  for (int64_t b : table) m.Unhold(b);
  EXPECT_EQ(m.cached_blocks(), 0);
  EXPECT_EQ(m.free_blocks(), 6);
  EXPECT_THROW(m.Hold(table[0]), std::logic_error) << "a free block cannot be held";
  EXPECT_THROW(m.Unhold(table[0]), std::logic_error);

  ASSERT_TRUE(m.AddSequence(3).ok());
  EXPECT_EQ(m.Share(3, 0, {table[0]}).code(), StatusCode::kInvalidArgument) << "a free block cannot be shared";
}

TEST(KvBlockManager, AnAppendShortOfPoolBlocksEvictsUntilItFits) {
  KvBlockManager m({4, 2, 1});
  ASSERT_TRUE(m.AddSequence(1).ok());
  ASSERT_TRUE(m.Append(1, 0, 8).ok());
  std::vector<int64_t> held = m.BlockTable(1, 0);
  for (int64_t b : held) m.Hold(b);
  m.Release(1);
  int evictions = 0;
  m.set_evictor([&] {
    if (held.empty()) return false;
    m.Unhold(held.back());
    held.pop_back();
    ++evictions;
    return true;
  });
  m.Pin(held[0]);
  EXPECT_EQ(m.free_blocks(), 3) << "a pinned block is not free";
  ASSERT_TRUE(m.AddSequence(2).ok());
  EXPECT_EQ(m.Append(2, 0, 7).status().code(), StatusCode::kResourceExhausted) << "never evicts for an append that cannot fit";
  EXPECT_EQ(evictions, 0);
  ASSERT_TRUE(m.Append(2, 0, 3).ok());
  EXPECT_EQ(evictions, 2) << "evicts only as much as the append needs";
  m.Unpin(held[0]);
  EXPECT_EQ(m.cached_blocks(), 2);
  m.Release(2);
  EXPECT_EQ(m.free_blocks(), 4);
}

TEST(KvBlockManager, RandomSharingHoldsAndEvictionKeepTheCountsExact) {
  const int64_t kBlocks = 48, kBs = 2, kLayers = 2;
  KvBlockManager m({kBlocks, kBs, kLayers});
  std::mt19937 rng(3);
  std::multiset<int64_t> holds;  // the "cache": one entry per hold
  m.set_evictor([&] {
    if (holds.empty()) return false;
    auto it = std::next(holds.begin(), static_cast<long>(rng() % holds.size()));
    m.Unhold(*it);
    holds.erase(it);
    return true;
  });
  std::set<SeqId> seqs;
  SeqId next = 0;
  for (int op = 0; op < 4000; ++op) {
    const int kind = static_cast<int>(rng() % 10);
    auto pick = [&] { return *std::next(seqs.begin(), static_cast<long>(rng() % seqs.size())); };
    const int64_t layer = static_cast<int64_t>(rng() % kLayers);
    if (kind == 0 || seqs.empty()) {
      ASSERT_TRUE(m.AddSequence(next).ok());
      seqs.insert(next++);
    } else if (kind == 1) {
      const SeqId id = pick();
      m.Release(id);
      seqs.erase(id);
    } else if (kind <= 4) {
      (void)m.Append(pick(), layer, 1 + static_cast<int64_t>(rng() % 4));
    } else if (kind == 5) {  // a new sequence starts from another's full blocks
      const SeqId from = pick();
      const auto& table = m.BlockTable(from, layer);
      std::vector<int64_t> full(table.begin(), table.begin() + m.NumTokens(from, layer) / kBs);
      ASSERT_TRUE(m.AddSequence(next).ok());
      ASSERT_TRUE(m.Share(next, layer, full).ok());
      seqs.insert(next++);
    } else if (kind <= 7) {  // the cache holds a block some table has
      const SeqId id = pick();
      const auto& table = m.BlockTable(id, layer);
      if (!table.empty()) {
        const int64_t b = table[rng() % table.size()];
        m.Hold(b);
        holds.insert(b);
      }
    } else if (!holds.empty()) {
      auto it = std::next(holds.begin(), static_cast<long>(rng() % holds.size()));
      m.Unhold(*it);
      holds.erase(it);
    }
    // The counts follow from the tables and the holds alone.
    std::map<int64_t, int64_t> layer_of;  // block -> the layer of the tables that have it
    for (SeqId id : seqs) {
      for (int64_t l = 0; l < kLayers; ++l) {
        const auto& table = m.BlockTable(id, l);
        ASSERT_EQ(static_cast<int64_t>(table.size()), (m.NumTokens(id, l) + kBs - 1) / kBs);
        for (int64_t b : table) {
          auto [it, fresh] = layer_of.emplace(b, l);
          ASSERT_EQ(it->second, l) << "block " << b << " in tables of two layers";
        }
      }
    }
    // What releasing each sequence would free: its blocks no other table has.
    std::map<int64_t, int64_t> tables_with;  // block -> tables that have it
    for (SeqId id : seqs) {
      for (int64_t l = 0; l < kLayers; ++l) {
        for (int64_t b : m.BlockTable(id, l)) ++tables_with[b];
      }
    }
    for (SeqId id : seqs) {
      int64_t alone = 0;
      for (int64_t l = 0; l < kLayers; ++l) {
        for (int64_t b : m.BlockTable(id, l)) alone += tables_with[b] == 1;
      }
      ASSERT_EQ(m.ReleasableBlocks(id), alone) << "sequence " << id;
    }
    int64_t cached = 0;
    for (int64_t b : std::set<int64_t>(holds.begin(), holds.end())) cached += layer_of.count(b) == 0;
    ASSERT_EQ(m.used_blocks(), static_cast<int64_t>(layer_of.size()));
    ASSERT_EQ(m.cached_blocks(), cached);
    ASSERT_EQ(m.used_blocks(0) + m.used_blocks(1), m.used_blocks());
  }
  for (SeqId id : seqs) m.Release(id);
  while (!holds.empty()) {
    m.Unhold(*holds.begin());
    holds.erase(holds.begin());
  }
  EXPECT_EQ(m.free_blocks(), kBlocks);
  EXPECT_EQ(m.cached_blocks(), 0);
  // Every block can be handed out again, once.
  ASSERT_TRUE(m.AddSequence(next).ok());
  auto all = m.Append(next, 0, kBlocks * kBs);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(std::set<int64_t>(m.BlockTable(next, 0).begin(), m.BlockTable(next, 0).end()).size(), static_cast<size_t>(kBlocks));
}

}  // namespace
}  // namespace modserve
