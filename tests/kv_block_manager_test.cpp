// Tests for the paged KV block bookkeeping: allocation at block boundaries,
// all-or-nothing appends, truncation, release, and no leaks under random use.
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

}  // namespace
}  // namespace modserve
