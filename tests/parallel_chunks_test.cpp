// ParallelChunks: every index exactly once in chunks of the asked size, on
// one thread or several, nested calls included; ChunkFor's arithmetic.
#include "engine/parallel_chunks.h"

#include <atomic>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace modserve {
namespace {

std::vector<std::pair<int64_t, int64_t>> Ranges(int64_t n, int64_t chunk) {
  std::mutex mu;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  ParallelChunks(n, chunk, [&](int64_t b, int64_t e) {
    std::lock_guard<std::mutex> lock(mu);
    ranges.emplace_back(b, e);
  });
  return ranges;
}

TEST(ParallelChunks, CoversEveryIndexOnceInChunksOfTheAskedSize) {
  const int before = KernelThreads();
  for (int threads : {1, 2, 3}) {
    SetKernelThreads(threads);
    for (auto [n, chunk] : std::vector<std::pair<int64_t, int64_t>>{{0, 4}, {1, 4}, {7, 1}, {64, 16}, {70, 16}, {5, 0}}) {
      auto ranges = Ranges(n, chunk);
      std::vector<int> seen(static_cast<size_t>(n), 0);
      for (auto [b, e] : ranges) {
        ASSERT_LT(b, e);
        ASSERT_LE(e, n);
        EXPECT_TRUE(b % std::max<int64_t>(chunk, 1) == 0) << "chunks start on chunk boundaries";
        EXPECT_TRUE(e - b == std::max<int64_t>(chunk, 1) || e == n) << "only the last chunk is short";
        for (int64_t i = b; i < e; ++i) ++seen[static_cast<size_t>(i)];
      }
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], 1) << "n " << n << " index " << i << " threads " << threads;
    }
  }
  SetKernelThreads(before);
}

TEST(ParallelChunks, NestedCallsRunEveryIndex) {
  const int before = KernelThreads();
  SetKernelThreads(2);
  std::atomic<int64_t> sum{0};
  ParallelChunks(4, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      ParallelChunks(10, 3, [&](int64_t b2, int64_t e2) {
        for (int64_t j = b2; j < e2; ++j) sum += i * 10 + j;
      });
    }
  });
  EXPECT_EQ(sum.load(), 780);  // sum of 0..39
  SetKernelThreads(before);
}

TEST(ParallelChunks, ThreadCountAndChunkSizes) {
  const int before = KernelThreads();
  SetKernelThreads(0);
  EXPECT_EQ(KernelThreads(), 1);
  SetKernelThreads(2);
  EXPECT_EQ(KernelThreads(), 2);
  EXPECT_EQ(ChunkFor(3072, 8, 16), 192);  // 3072 / (2 * 8)
  EXPECT_EQ(ChunkFor(200, 8, 16), 16);    // 200 / 16 = 12, rounded up to whole 16s
  EXPECT_EQ(ChunkFor(10, 8, 16), 16);     // never below the multiple
  EXPECT_EQ(ChunkFor(5, 8, 0), 1);
  SetKernelThreads(before);
}

}  // namespace
}  // namespace modserve
