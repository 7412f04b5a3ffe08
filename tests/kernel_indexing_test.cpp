// CPU tests of the CUDA kernels' per-thread indexing logic
// (engine/cuda/kernel_indexing.h), run on every machine, GPU or not.
#include <gtest/gtest.h>

#include <random>

#include "engine/cuda/kernel_indexing.h"
#include "engine/kv_block_manager.h"

namespace modserve::kernels {
namespace {

TEST(KernelIndexing, PagedSlotMatchesTheBlockManager) {
  KvBlockManager m({64, 5, 2});
  std::mt19937 rng(3);
  for (SeqId id = 0; id < 6; ++id) {
    ASSERT_TRUE(m.AddSequence(id).ok());
    ASSERT_TRUE(m.Append(id, 1, 1 + static_cast<int64_t>(rng() % 37)).ok());
  }
  for (SeqId id = 0; id < 6; ++id) {
    std::vector<int64_t> expected;
    m.AppendSlots(id, 1, &expected);
    std::vector<int32_t> table(m.BlockTable(id, 1).begin(), m.BlockTable(id, 1).end());
    for (size_t t = 0; t < expected.size(); ++t) EXPECT_EQ(PagedSlot(table.data(), static_cast<int64_t>(t), 5), expected[t]);
  }
}

TEST(KernelIndexing, CompactionByExclusivePrefixListsSelectedTokensInOrder) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 3000);
    std::vector<uint8_t> flags(static_cast<size_t>(n));
    std::vector<int64_t> expected;
    for (int64_t i = 0; i < n; ++i) {
      flags[static_cast<size_t>(i)] = rng() % 8 == 0;
      if (flags[static_cast<size_t>(i)]) expected.push_back(i);
    }
    // What the kernel's threads do, given the exclusive prefix counts its scan computes.
    std::vector<int64_t> out(expected.size(), -1);
    int64_t before = 0;
    for (int64_t i = 0; i < n; ++i) {
      CompactWrite(i, flags[static_cast<size_t>(i)], before, out.data());
      before += flags[static_cast<size_t>(i)];
    }
    EXPECT_EQ(out, expected);
  }
}

TEST(KernelIndexing, GatherAndScaleScatterAddTouchOnlyRoutedRows) {
  const int64_t n = 7, d = 3;
  std::vector<float> x(n * d);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  const std::vector<int64_t> idx = {1, 4, 6};
  std::vector<float> g(idx.size() * d);
  for (int64_t j = 0; j < 3; ++j)
    for (int64_t c = 0; c < d; ++c) GatherElement(x.data(), idx.data(), j, c, d, g.data());
  EXPECT_EQ(g, (std::vector<float>{3, 4, 5, 12, 13, 14, 18, 19, 20}));
  const std::vector<float> w = {2, 0.5f, -1};
  std::vector<float> delta(9, 1.0f);
  std::vector<float> y = x;
  for (int64_t j = 0; j < 3; ++j)
    for (int64_t c = 0; c < d; ++c) ScatterAddElement(y.data(), idx.data(), w.data(), delta.data(), j, c, d);
  for (int64_t r = 0; r < n; ++r) {
    const float add = r == 1 ? 2 : r == 4 ? 0.5f : r == 6 ? -1 : 0;
    for (int64_t c = 0; c < d; ++c) EXPECT_FLOAT_EQ(y[r * d + c], x[r * d + c] + add) << r << "," << c;
  }
}

}  // namespace
}  // namespace modserve::kernels
