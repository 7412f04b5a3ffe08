// ParallelChunks: the engine's own kernels (few-row GEMM, decode attention)
// split their work with this instead of at::parallel_for. It cuts [0, n) into
// chunks and lets the calling thread and KernelThreads() - 1 workers of a
// process-wide pool claim them one at a time (dynamic scheduling).
//
// Why: at::parallel_for hands each thread one fixed share up front, so when
// another thread of the process (a gRPC poller, say) takes a core for a
// moment, the whole region waits for the delayed share. Here the running
// threads take the chunks a delayed thread has not claimed, and the caller
// waits only for chunks a worker has started, never for a worker to wake.
// Idle workers poll for 20 us, then sleep: OpenMP's workers (which this
// replaced) spun for milliseconds after every region, and in mod-server on
// 2 cores that spinning took about a fifth of the CPU from gRPC and the step
// loop between steps.
//
// The kernel thread count is process-wide, like LibTorch's intra-op count,
// and separate from it: the server runs its kernels on every core and the
// rest of torch on one fewer (see EngineOptions).
//
// When LibTorch itself runs on several threads, its OpenMP workers spin
// between its ops, and a second pool on the same cores fights them (mod-bench,
// shipped model, batch-32 decode with 2 kernel and 2 LibTorch threads on 2
// cores: 8.5k tok/s against 15k). Then the kernels run as OpenMP loops on
// LibTorch's pool instead (SetKernelThreads's `openmp`), as they all did
// before the pool.
//
// Thread-safety: SetKernelThreads, KernelThreads and ParallelChunks may be
// called from any thread. fn runs concurrently on disjoint ranges and must be
// safe for that. A call from inside fn or an OpenMP region, or while another
// thread's call has the pool, runs serially on the calling thread.
#pragma once

#include <cstdint>
#include <functional>

namespace modserve {

// threads < 1 means 1. openmp: run on the process's OpenMP pool rather than
// the kernel pool; set it when LibTorch's intra-op threads are more than 1.
void SetKernelThreads(int threads, bool openmp = false);
int KernelThreads();                 // 1 until set

// Runs fn(begin, end) over [0, n) in chunks of `chunk` indices (the last may
// be shorter), each chunk once.
void ParallelChunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn);

// A chunk size for n indices of about equal cost: about `per_thread` chunks
// per kernel thread, a multiple of `multiple` (and at least that).
int64_t ChunkFor(int64_t n, int64_t per_thread, int64_t multiple);

}  // namespace modserve
