#include "engine/parallel_chunks.h"

#include <algorithm>
#include <atomic>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace modserve {

namespace {
std::atomic<int> kernel_threads{1};
}  // namespace

void SetKernelThreads(int threads) { kernel_threads.store(std::max(threads, 1)); }

int KernelThreads() { return kernel_threads.load(); }

void ParallelChunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(chunk, 1);
  const int64_t chunks = (n + chunk - 1) / chunk;
  const int64_t team = std::min<int64_t>(KernelThreads(), chunks);
  auto run = [&](int64_t c) { fn(c * chunk, std::min(n, (c + 1) * chunk)); };
#ifdef _OPENMP
  if (team > 1 && !omp_in_parallel()) {
#pragma omp parallel for num_threads(static_cast<int>(team)) schedule(dynamic, 1)
    for (int64_t c = 0; c < chunks; ++c) run(c);
    return;
  }
#endif
  for (int64_t c = 0; c < chunks; ++c) run(c);
}

int64_t ChunkFor(int64_t n, int64_t per_thread, int64_t multiple) {
  multiple = std::max<int64_t>(multiple, 1);
  const int64_t want = std::max<int64_t>(1, n / (KernelThreads() * std::max<int64_t>(per_thread, 1)));
  return std::max(multiple, (want + multiple - 1) / multiple * multiple);
}

}  // namespace modserve
