#include "engine/parallel_chunks.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace modserve {

namespace {

void Pause() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

thread_local bool in_region = false;  // this thread runs chunks of a region: nested calls run serially

// KernelThreads() - 1 workers that claim chunks of the current region beside
// the thread that called ParallelChunks.
//
// A region is a generation number, the chunk count and the function. `next_`
// holds the generation's low 32 bits in its high 32 bits and the chunks
// claimed so far in the low ones, so a worker that learnt of a region late
// can claim nothing of a newer one: it compares generations in the same
// atomic step as it claims (a worker would have to sleep through 2^32
// regions to be fooled).
// The caller returns once every claimed chunk is done (`done_`), never waiting
// for a worker that has not started. Idle workers poll for kSpin, then sleep
// on the condition variable.
class Pool {
 public:
  explicit Pool(int workers) {
    for (int w = 0; w < workers; ++w) threads_.emplace_back([this] { Work(); });
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  int workers() const { return static_cast<int>(threads_.size()); }

  // Runs run(c) for c in [0, chunks); false, having run nothing, when another
  // thread's region has the pool.
  bool Run(int64_t chunks, const std::function<void(int64_t)>& run) {
    if (chunks >= static_cast<int64_t>(kIndexMask) || busy_.exchange(true, std::memory_order_acquire)) return false;
    uint64_t gen;
    bool wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      gen = generation_.load(std::memory_order_relaxed) + 1;
      run_ = &run;
      chunks_ = chunks;
      done_.store(0, std::memory_order_relaxed);
      next_.store(gen << 32, std::memory_order_relaxed);
      generation_.store(gen, std::memory_order_release);
      wake = sleepers_ > 0;
    }
    if (wake) cv_.notify_all();
    in_region = true;
    int64_t mine = 0;
    for (int64_t c; (c = static_cast<int64_t>(next_.fetch_add(1, std::memory_order_relaxed) & kIndexMask)) < chunks; ++mine) run(c);
    in_region = false;
    done_.fetch_add(mine, std::memory_order_acq_rel);
    while (done_.load(std::memory_order_acquire) < chunks) Pause();  // claimed by workers, still running
    busy_.store(false, std::memory_order_release);
    return true;
  }

 private:
  static constexpr uint64_t kIndexMask = (uint64_t{1} << 32) - 1;
  // Long enough to span the torch ops between two kernels of a step, short
  // enough to give the core back to gRPC and the rest between steps.
  static constexpr std::chrono::microseconds kSpin{20};

  void Work() {
    in_region = true;
    uint64_t seen = 0;
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      for (int i = 0; generation_.load(std::memory_order_acquire) == seen; ++i) {
        if (i % 64 == 63 && std::chrono::steady_clock::now() > until) break;
        Pause();
      }
      const std::function<void(int64_t)>* run;
      int64_t chunks;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (generation_.load(std::memory_order_relaxed) == seen) {
          ++sleepers_;
          cv_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
          --sleepers_;
        }
        if (stop_) return;
        seen = generation_.load(std::memory_order_relaxed);
        run = run_;
        chunks = chunks_;
      }
      int64_t mine = 0;
      for (uint64_t v = next_.load(std::memory_order_relaxed); v >> 32 == (seen & kIndexMask) && static_cast<int64_t>(v & kIndexMask) < chunks;) {
        if (!next_.compare_exchange_weak(v, v + 1, std::memory_order_relaxed)) continue;  // v reloaded
        (*run)(static_cast<int64_t>(v & kIndexMask));
        ++mine;
        v = next_.load(std::memory_order_relaxed);
      }
      if (mine > 0) done_.fetch_add(mine, std::memory_order_acq_rel);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};  // written under mu_
  std::atomic<uint64_t> next_{0};        // generation << 32 | chunks claimed
  std::atomic<int64_t> done_{0};         // chunks finished in this generation
  std::atomic<bool> busy_{false};        // a thread's region has the pool
  const std::function<void(int64_t)>* run_ = nullptr;  // under mu_
  int64_t chunks_ = 0;                                 // under mu_
  int sleepers_ = 0;                                   // under mu_
  bool stop_ = false;                                  // under mu_
  std::vector<std::thread> threads_;
};

std::atomic<int> kernel_threads{1};
std::atomic<bool> on_openmp{false};
std::mutex pool_mu;                // guards replacing the pool
std::shared_ptr<Pool> pool;        // KernelThreads() - 1 workers; null at 1 thread or on OpenMP

std::shared_ptr<Pool> CurrentPool() { return std::atomic_load(&pool); }

bool InOpenMpRegion() {
#ifdef _OPENMP
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}

// The region as an OpenMP loop on `team` threads of the process's pool.
bool RunOnOpenMp(int64_t chunks, int64_t team, const std::function<void(int64_t)>& run) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(static_cast<int>(team)) schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) run(c);
  return true;
#else
  (void)chunks, (void)team, (void)run;
  return false;
#endif
}

}  // namespace

void SetKernelThreads(int threads, bool openmp) {
  threads = std::max(threads, 1);
  std::lock_guard<std::mutex> lock(pool_mu);
  kernel_threads.store(threads);
  on_openmp.store(openmp);
  auto current = CurrentPool();
  if (threads == 1 || openmp) {
    std::atomic_store(&pool, std::shared_ptr<Pool>());
  } else if (current == nullptr || current->workers() != threads - 1) {
    std::atomic_store(&pool, std::make_shared<Pool>(threads - 1));
  }
}

int KernelThreads() { return kernel_threads.load(); }

void ParallelChunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(chunk, 1);
  const int64_t chunks = (n + chunk - 1) / chunk;
  const std::function<void(int64_t)> run = [&](int64_t c) { fn(c * chunk, std::min(n, (c + 1) * chunk)); };
  if (chunks > 1 && !in_region && !InOpenMpRegion()) {
    if (on_openmp.load(std::memory_order_relaxed)) {
      if (RunOnOpenMp(chunks, std::min<int64_t>(KernelThreads(), chunks), run)) return;
    } else if (auto p = CurrentPool(); p != nullptr && p->Run(chunks, run)) {
      return;
    }
  }
  for (int64_t c = 0; c < chunks; ++c) run(c);
}

int64_t ChunkFor(int64_t n, int64_t per_thread, int64_t multiple) {
  multiple = std::max<int64_t>(multiple, 1);
  const int64_t want = std::max<int64_t>(1, n / (KernelThreads() * std::max<int64_t>(per_thread, 1)));
  return std::max(multiple, (want + multiple - 1) / multiple * multiple);
}

}  // namespace modserve
