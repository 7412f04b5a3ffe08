// Tests for the prefix cache's index: longest-prefix matches in whole
// granularity steps, per-layer rows and blocks, verification of every link,
// holds on the blocks, least-recently-used eviction of leaves, and whole
// entries with no stray hold when memory runs out in Insert.
#include <gtest/gtest.h>

#include <numeric>

#include "engine/prefix_cache.h"
#include "failing_allocator.h"

namespace modserve {
namespace {

constexpr int64_t kG = 4;  // granularity = block size

// A sequence whose layer 0 holds every token and layer 1 every other token.
struct Fixture {
  KvBlockManager blocks{{64, kG, 2}};
  PrefixCache cache{&blocks, kG};

  // Runs `tokens` as sequence `id` and records its prefixes.
  void Run(SeqId id, const std::vector<int64_t>& tokens) {
    ASSERT_TRUE(blocks.AddSequence(id).ok());
    const auto n = static_cast<int64_t>(tokens.size());
    ASSERT_TRUE(blocks.Append(id, 0, n).ok());
    ASSERT_TRUE(blocks.Append(id, 1, n / 2).ok());
    std::vector<std::vector<int64_t>> rows;
    for (int64_t end = kG; end <= n; end += kG) rows.push_back({end, end / 2});
    cache.Insert(id, tokens, rows);
  }
};

std::vector<int64_t> Iota(int64_t n, int64_t from = 0) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), from);
  return v;
}

TEST(PrefixCache, MatchesTheLongestCachedPrefixInWholeSteps) {
  Fixture f;
  f.Run(1, Iota(10));  // prefixes of 4 and 8 tokens
  EXPECT_EQ(f.cache.size(), 2);
  auto m = f.cache.Match(Iota(20), 20);
  EXPECT_EQ(m.length, 8);
  EXPECT_EQ(m.rows, (std::vector<int64_t>{8, 4}));
  ASSERT_EQ(m.blocks.size(), 2u);
  EXPECT_EQ(m.blocks[0], (std::vector<int64_t>{f.blocks.BlockTable(1, 0)[0], f.blocks.BlockTable(1, 0)[1]}));
  EXPECT_EQ(m.blocks[1], (std::vector<int64_t>{f.blocks.BlockTable(1, 1)[0]}));
  EXPECT_EQ(m.boundary_rows, (std::vector<std::vector<int64_t>>{{4, 2}, {8, 4}}));

  EXPECT_EQ(f.cache.Match(Iota(20), 7).length, 4) << "limit";
  EXPECT_EQ(f.cache.Match(Iota(3), 3).length, 0);
  std::vector<int64_t> other = Iota(20);
  other[5] = 99;
  EXPECT_EQ(f.cache.Match(other, 20).length, 4) << "diverges in the second group";
  other[0] = 99;
  EXPECT_EQ(f.cache.Match(other, 20).length, 0);
}

TEST(PrefixCache, AGroupSeenUnderAnotherParentDoesNotMatch) {
  Fixture f;
  f.Run(1, {1, 1, 1, 1, 2, 2, 2, 2});
  // Same second group of tokens, different first group.
  EXPECT_EQ(f.cache.Match({3, 3, 3, 3, 2, 2, 2, 2, 5}, 9).length, 0);
  f.Run(2, {3, 3, 3, 3, 2, 2, 2, 2});
  EXPECT_EQ(f.cache.size(), 4);
  EXPECT_EQ(f.cache.Match({3, 3, 3, 3, 2, 2, 2, 2, 5}, 9).length, 8);
  EXPECT_EQ(f.cache.Match({1, 1, 1, 1, 2, 2, 2, 2, 5}, 9).blocks[0][0], f.blocks.BlockTable(1, 0)[0]);
}

TEST(PrefixCache, PrefixesAreFoundOnlyUnderTheSaltTheyWereRecordedWith) {
  Fixture f;
  ASSERT_TRUE(f.blocks.AddSequence(1).ok());
  ASSERT_TRUE(f.blocks.Append(1, 0, 8).ok());
  ASSERT_TRUE(f.blocks.Append(1, 1, 4).ok());
  f.cache.Insert(1, Iota(8), {{4, 2}, {8, 4}}, "tenant-a");
  EXPECT_EQ(f.cache.Match(Iota(9), 9, "tenant-a").length, 8);
  EXPECT_EQ(f.cache.Match(Iota(9), 9).length, 0) << "not under the empty salt";
  EXPECT_EQ(f.cache.Match(Iota(9), 9, "tenant-b").length, 0);
  EXPECT_EQ(f.cache.Match(Iota(9), 9, "tenant-").length, 0);
  f.cache.Insert(1, Iota(8), {{4, 2}, {8, 4}});
  EXPECT_EQ(f.cache.size(), 4) << "the same tokens under another salt are another prefix";
  EXPECT_EQ(f.cache.Match(Iota(9), 9).length, 8);
}

TEST(PrefixCache, EntriesHoldTheirBlocksUntilEvictedLeastRecentlyUsedLeafFirst) {
  Fixture f;
  f.Run(1, Iota(8));       // entries A (4), A/B (8)
  f.Run(2, Iota(8, 100));  // entries C (4), C/D (8)
  f.Run(3, {0, 1, 2, 3, 50, 51, 52, 53});  // A again, A/E
  EXPECT_EQ(f.cache.size(), 5);
  for (SeqId id : {1, 2, 3}) f.blocks.Release(id);
  // Sequence 3 shared nothing: its blocks of group A are its own, so A's
  // blocks are sequence 1's; all are only cached now.
  EXPECT_EQ(f.blocks.used_blocks(), 0);
  EXPECT_GT(f.blocks.cached_blocks(), 0);
  f.cache.Match(Iota(8), 8);  // A, A/B used last
  ASSERT_TRUE(f.cache.EvictOne());
  EXPECT_EQ(f.cache.Match(Iota(8, 100), 8).length, 4) << "the oldest leaf, C/D, went first";
  ASSERT_TRUE(f.cache.EvictOne());  // A/E (C was just used)
  EXPECT_EQ(f.cache.Match({0, 1, 2, 3, 50, 51, 52, 53}, 8).length, 4);
  EXPECT_EQ(f.cache.Match(Iota(8), 8).length, 8) << "A/B, used last, stays";
  f.cache.Clear();
  EXPECT_EQ(f.cache.size(), 0);
  EXPECT_EQ(f.blocks.cached_blocks(), 0);
  EXPECT_EQ(f.blocks.free_blocks(), 64) << "every hold released";
  EXPECT_FALSE(f.cache.EvictOne());
}

TEST(PrefixCache, InsertingAKnownPrefixAddsNoHolds) {
  Fixture f;
  f.Run(1, Iota(8));
  const int64_t free_before = f.blocks.free_blocks();
  f.cache.Insert(1, Iota(8), {{4, 2}, {8, 4}});
  EXPECT_EQ(f.cache.size(), 2);
  f.blocks.Release(1);
  f.cache.Clear();
  EXPECT_EQ(f.blocks.free_blocks(), 64);
  EXPECT_EQ(free_before, 64 - 3) << "two blocks at layer 0, one at layer 1";
}

// A sequence that routed a cached prefix otherwise (here layer 1 holds one
// row of the first 4 tokens, not 2) records nothing below that entry: a
// longer entry of its blocks under the other's rows would hand a match
// row counts that are not those of the blocks it gets.
TEST(PrefixCache, APrefixRoutedOtherwiseIsNotRecordedUnderTheCachedOne) {
  Fixture f;
  f.Run(1, Iota(8));
  ASSERT_TRUE(f.cache.EvictOne());  // the 8-token leaf; the 4-token entry stays
  ASSERT_EQ(f.cache.size(), 1);
  ASSERT_TRUE(f.blocks.AddSequence(2).ok());
  ASSERT_TRUE(f.blocks.Append(2, 0, 8).ok());
  ASSERT_TRUE(f.blocks.Append(2, 1, 3).ok());
  f.cache.Insert(2, Iota(8), {{4, 1}, {8, 3}});
  EXPECT_EQ(f.cache.size(), 1);
  const PrefixMatch m = f.cache.Match(Iota(9), 9);
  EXPECT_EQ(m.length, 4);
  EXPECT_EQ(m.boundary_rows, (std::vector<std::vector<int64_t>>{{4, 2}}));
  EXPECT_EQ(m.blocks[1], (std::vector<int64_t>{f.blocks.BlockTable(1, 1)[0]})) << "sequence 1's blocks, with its rows";
}

TEST(PrefixCache, RunningOutOfMemoryInInsertLeavesWholeEntriesAndNoHold) {
  // A failure at each of Insert's allocations in turn: the entries recorded
  // before it stay whole and matchable, the one it hit is not there at all,
  // and once the cache is cleared and the sequence released, no block is held.
  const std::vector<int64_t> tokens = Iota(12);  // prefixes of 4, 8 and 12 tokens
  for (int64_t n = 0;; ++n) {
    ASSERT_LT(n, 1000) << "Insert never ran without failing";
    Fixture f;
    ASSERT_TRUE(f.blocks.AddSequence(1).ok());
    ASSERT_TRUE(f.blocks.Append(1, 0, 12).ok());
    ASSERT_TRUE(f.blocks.Append(1, 1, 6).ok());
    const std::vector<std::vector<int64_t>> rows = {{4, 2}, {8, 4}, {12, 6}};
    bool threw = false;
    testing::FailAllocationAfter(n);
    try {
      f.cache.Insert(1, tokens, rows);
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    const bool failed = testing::AllocationFailed();
    testing::StopFailingAllocations();
    EXPECT_EQ(threw, failed) << "allocation " << n;
    const int64_t entries = f.cache.size();
    EXPECT_EQ(f.cache.Match(tokens, 12).length, entries * kG) << "allocation " << n;
    f.cache.Clear();
    EXPECT_EQ(f.cache.size(), 0) << "allocation " << n;
    f.blocks.Release(1);
    EXPECT_EQ(f.blocks.free_blocks(), f.blocks.num_blocks()) << "allocation " << n;
    if (!failed) {
      EXPECT_EQ(entries, 3);
      EXPECT_GE(n, 3 * 4) << "each entry allocates its tokens, rows, blocks and map node";
      break;
    }
  }
}

}  // namespace
}  // namespace modserve
