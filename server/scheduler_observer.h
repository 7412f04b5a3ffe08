// SchedulerObserver: how the scheduler reports what it does (the metrics
// implement it; the scheduler knows nothing of Prometheus). Plain numbers and
// the engine's plain StepStats.
//
// Thread-safety: OnQueueChanged may be called from any thread (Submit runs on
// gRPC threads); the rest from the step thread. Implementations must be
// thread-safe and must not block.
#pragma once

#include <cstdint>

#include "engine/engine.h"
#include "engine/generation_state.h"
#include "engine/status.h"

namespace modserve {

struct StepReport {
  const StepStats* stats = nullptr;  // the engine's stats for this step
  int64_t batch_tokens = 0;
  int64_t running = 0;               // requests running in this step
  double engine_seconds = 0;         // time in the engine's Step (retries included)
  bool decode_only = false;          // every chunk was one decode token
};

class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  virtual void OnQueueChanged(int64_t waiting, int64_t running) {}
  virtual void OnStep(const StepReport& report) {}
  // Used / total KV blocks, after every step and after requests end.
  virtual void OnKvUsage(double ratio) {}
  // A running request was preempted (to be recomputed later): for KV memory,
  // or to make room for a waiting request of higher priority.
  virtual void OnPreempted(bool for_priority) {}
  // With prefix caching, at the same times: blocks only the cache holds / total.
  virtual void OnPrefixCacheUsage(double ratio) {}
  // A request's first step applied: when it was admitted, `queried` tokens
  // were looked up in the prefix cache and `hit` of them found there. Once per
  // request (a recomputation after a preemption is not a lookup).
  virtual void OnPrefixLookup(int64_t queried, int64_t hit) {}
  virtual void OnFirstToken(double seconds_since_arrival) {}
  virtual void OnInterToken(double seconds) {}
  // A request accepted by Submit ended: finished (OK) or failed/cancelled.
  virtual void OnRequestDone(FinishReason reason, StatusCode code, double seconds, int64_t prompt_tokens,
                             int64_t generated_tokens) {}
};

}  // namespace modserve
