// Thread priority: keeps a CPU server's I/O threads off the cores its engine
// computes on.
//
// On a CPU server the engine's step thread and kernel workers share the cores
// with gRPC's threads, the write dispatcher and the metrics endpoint. Linux
// gives a waking I/O thread a core at once, preempting an engine thread; a
// kernel region then waits for the preempted thread, and if that is the step
// thread the whole step waits. SCHED_IDLE threads instead run only on a core
// no other thread wants, and a waking compute thread takes the core back at
// once. A step leaves such time: LibTorch's ops run on the step thread alone
// while the kernel pool's workers sleep (parallel_chunks.h), and the loop
// plans and samples between steps. mod-server on the shipped model, 2 cores,
// concurrency 32 (README "Serving benchmark"): 7-34% more output tokens/s
// and a p99 inter-token latency 15-35% lower.
//
// Use: the thread on the critical path (mod-server's step thread) calls
// MarkComputeThread(); once it has, the process calls
// LowerOtherThreadsToIdle(). mod-server leaves the kernel pool's workers
// unmarked on purpose: the step thread takes the chunks a delayed worker has
// not claimed (parallel_chunks.h), while a normal-priority worker that has
// work shuts the idle I/O threads out of its core. Threads created later
// inherit the policy of the thread that creates them, so gRPC's later threads
// are idle too and the compute thread's own children are not. An
// unprivileged thread cannot leave SCHED_IDLE: this is for a process's
// start-up, once.
//
// Idle threads starve when compute threads keep every core busy: do not lower
// them on one CPU (see UsableCpus), or with more busy compute threads than
// cores.
//
// Thread-safety: all functions may be called from any thread.
#pragma once

#include "engine/status.h"

namespace modserve {

// Records the calling thread as a compute thread: LowerOtherThreadsToIdle
// leaves it as it is.
void MarkComputeThread();

// Whether the calling thread has been marked.
bool IsComputeThread();

// Puts every thread of this process that is not a compute thread under
// SCHED_IDLE. Returns how many threads it moved (threads that exit meanwhile
// are skipped); an error on a system without SCHED_IDLE or when the kernel
// refuses.
StatusOr<int> LowerOtherThreadsToIdle();

// Whether the calling thread runs under SCHED_IDLE.
bool RunsAtIdlePriority();

// CPUs this process may run on (its affinity mask), at least 1.
int UsableCpus();

}  // namespace modserve
