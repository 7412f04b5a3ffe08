// ParallelChunks: the engine's own kernels (few-row GEMM, decode attention)
// split their work with this instead of at::parallel_for. It cuts [0, n) into
// chunks and lets up to KernelThreads() OpenMP threads claim them one at a
// time (dynamic scheduling).
//
// Why: at::parallel_for hands each thread one fixed share up front, so when
// another thread of the process (a gRPC poller, say) takes a core for a
// moment, the whole region waits for the delayed share. Here the running
// threads take the chunks a delayed thread has not claimed. In mod-server on
// 2 cores, kernels on 2 threads this way (LibTorch ops on 1) served about 14%
// more tokens/s than 1 thread, where 2 threads of at::parallel_for served
// fewer.
//
// The kernel thread count is process-wide, like LibTorch's intra-op count,
// and separate from it: the server runs its kernels on every core and the
// rest of torch on one fewer (see EngineOptions).
//
// Thread-safety: SetKernelThreads is meant for start-up; KernelThreads and
// ParallelChunks may be called from any thread. fn runs concurrently on
// disjoint ranges and must be safe for that. A call from inside an OpenMP
// region runs serially on the calling thread. Uses the process's OpenMP pool
// (the one LibTorch uses): no threads of its own.
#pragma once

#include <cstdint>
#include <functional>

namespace modserve {

void SetKernelThreads(int threads);  // < 1 means 1
int KernelThreads();                 // 1 until set

// Runs fn(begin, end) over [0, n) in chunks of `chunk` indices (the last may
// be shorter), each chunk once.
void ParallelChunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn);

// A chunk size for n indices of about equal cost: about `per_thread` chunks
// per kernel thread, a multiple of `multiple` (and at least that).
int64_t ChunkFor(int64_t n, int64_t per_thread, int64_t multiple);

}  // namespace modserve
