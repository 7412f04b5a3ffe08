// ParallelChunks: every index exactly once in chunks of the asked size, on
// one thread or several, nested calls, thousands of regions back to back and
// regions from several threads at once included; the pool's workers really
// take chunks; ChunkFor's arithmetic.
#include "engine/parallel_chunks.h"

#include <atomic>
#include <mutex>
#include <chrono>
#include <set>
#include <thread>
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
    for (bool openmp : {false, true}) {
      SetKernelThreads(threads, openmp);
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
        for (int64_t i = 0; i < n; ++i) {
          EXPECT_EQ(seen[static_cast<size_t>(i)], 1) << "n " << n << " index " << i << " threads " << threads << " openmp " << openmp;
        }
      }
    }
  }
  SetKernelThreads(before);
}

TEST(ParallelChunks, NestedCallsRunEveryIndex) {
  const int before = KernelThreads();
  for (bool openmp : {false, true}) {
    SetKernelThreads(2, openmp);
    std::atomic<int64_t> sum{0};
    ParallelChunks(4, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        ParallelChunks(10, 3, [&](int64_t b2, int64_t e2) {
          for (int64_t j = b2; j < e2; ++j) sum += i * 10 + j;
        });
      }
    });
    EXPECT_EQ(sum.load(), 780) << "openmp " << openmp;  // sum of 0..39
  }
  SetKernelThreads(before);
}

TEST(ParallelChunks, ThousandsOfRegionsBackToBackAndFromSeveralThreads) {
  const int before = KernelThreads();
  SetKernelThreads(3);
  auto regions = [](int count, int64_t* total) {
    for (int r = 0; r < count; ++r) {
      const int64_t n = 1 + r % 37;
      std::atomic<int64_t> sum{0};
      ParallelChunks(n, 1 + r % 5, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) sum += i + 1;
      });
      *total += sum.load() == n * (n + 1) / 2 ? 1 : 0;
    }
  };
  int64_t alone = 0;
  regions(5000, &alone);
  EXPECT_EQ(alone, 5000) << "regions whose every index ran once";
  int64_t a = 0, b = 0;  // two callers at once: one gets the pool, the other runs serially, both complete
  std::thread other([&] { regions(2000, &b); });
  regions(2000, &a);
  other.join();
  EXPECT_EQ(a, 2000);
  EXPECT_EQ(b, 2000);
  SetKernelThreads(before);
}

TEST(ParallelChunks, WorkersTakeChunks) {
  const int before = KernelThreads();
  SetKernelThreads(2);
  std::mutex mu;
  std::set<std::thread::id> ran_on;
  ParallelChunks(50, 1, [&](int64_t, int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // 100 ms in all: time for a sleeping worker to wake
    std::lock_guard<std::mutex> lock(mu);
    ran_on.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(ran_on.size(), 2u);
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
