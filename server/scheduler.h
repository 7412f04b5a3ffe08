// Scheduler: iteration-level (continuous) batching over a StepEngine
// (DESIGN §3). Each Step() builds a plan from the waiting queue, the running
// set, the per-step token budget and the free KV blocks: the next token of
// every decoding request, then prefill chunks of requests still reading their
// prompt, then newly admitted requests, all in one engine step; while any
// request decodes, the prefill chunks share at most max_prefill_tokens. It samples
// each finished chunk's next token, applies stop criteria and hands updates to
// each request's sink.
//
// Admission is route-aware: a request's KV need is estimated with the routed
// layers' observed compute fraction, not a dense worst case. If the engine
// still runs out of blocks, the lowest-ranked running request is preempted
// (its blocks freed) and later recomputed from its prompt and the tokens it
// has generated so far; accepted requests never fail for memory. A request
// that could not fit even in an empty pool is refused at Submit.
//
// Requests rank by priority (lower first), then arrival: the waiting queue
// is kept in that order, and memory preemption takes the newest request of
// the lowest priority. A waiting request that finds no room (max_running or
// blocks) preempts the lowest-ranked running request if its priority is
// strictly lower, and for blocks only if preempting every running request
// below it could make room; a request is never preempted for one of its own
// priority, nor readmitted in the step that preempted it. There is no aging:
// a steady stream of higher priorities can hold a low one back
// indefinitely. With every priority 0 this is first come, first served, and
// the newest request is preempted for memory.
//
// Thread-safety: Submit, Cancel, StopAdmitting, CancelAll and the counters
// may be called from any thread. Step and WaitForWork are called by one
// thread only (the step loop). Sinks run on the step thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "server/generation_request.h"
#include "server/scheduler_observer.h"
#include "server/step_engine.h"

namespace modserve {

struct SchedulerOptions {
  int64_t max_queue = 256;         // waiting requests; beyond: RESOURCE_EXHAUSTED
  int64_t max_running = 64;        // requests in the engine at once
  int64_t max_batch_tokens = 256;  // tokens per step (decode tokens + prefill chunks)
  // Prompt tokens per step while any request is decoding (0: no cap beyond
  // max_batch_tokens). Every decoding request waits for the whole step, so
  // this bounds how much a newcomer's prefill stretches their inter-token
  // latency; with nothing decoding, prefill takes the whole budget.
  int64_t max_prefill_tokens = 32;
};

class Scheduler {
 public:
  using Handle = uint64_t;

  // `engine` and `observer` (may be null) must outlive the scheduler.
  Scheduler(StepEngine* engine, SchedulerOptions opts, SchedulerObserver* observer = nullptr);
  ~Scheduler();

  // Queues a request. RESOURCE_EXHAUSTED when the queue is full or the
  // request could never fit in the KV pool; UNAVAILABLE once draining.
  StatusOr<Handle> Submit(GenerationRequest request, UpdateSink sink);
  // Queues the completions of one request (GenerateRequest.n), one sink
  // each: all of them, or none (the same refusals, RESOURCE_EXHAUSTED when
  // the queue lacks room for all, INVALID_ARGUMENT for more than max_queue
  // or a sink count that does not match). They fail together: when one ends
  // with an error, the others end with CANCELLED before they run again.
  // With prefix caching and a prompt longer than a block, requests[1..]
  // are not admitted before requests[0] has read its prompt (they then
  // find it in the prefix cache); the queue behind them waits those steps.
  StatusOr<std::vector<Handle>> SubmitGroup(std::vector<GenerationRequest> requests, std::vector<UpdateSink> sinks);
  // The request ends with CANCELLED within one step (no-op if already done).
  void Cancel(Handle h);
  // Refuse new requests from now on (draining); in-flight ones continue.
  void StopAdmitting();
  // Ends every request with `status` at the next step.
  void CancelAll(Status status);

  // Runs one iteration; returns false if there was nothing to do.
  bool Step();
  // Blocks until there is work or `timeout` passes (or Wake() is called).
  void WaitForWork(std::chrono::milliseconds timeout);
  void Wake();

  int64_t waiting() const;
  int64_t running() const;
  bool idle() const { return waiting() == 0 && running() == 0; }

 private:
  struct Active;
  using ActivePtr = std::unique_ptr<Active>;

  // Moves submitted requests to the waiting queue, then ends the requests
  // cancelled (Cancel, CancelAll), expired or of a failed group.
  void TakeInboxAndEndCancelled();
  void Finish(Active& a, Status status);
  // A request entering the engine: its start from the prefix cache, if any.
  void Admit(Active& a);
  // A step of `a` applied: on its first, its cached prompt tokens are final.
  void NoteFirstRun(Active& a);
  // `failed` of a group ended with `why`: its other requests end too, before
  // the next admission (at once if they come later in this sweep).
  void StopGroup(const Active& failed, const Status& why);
  // A later completion of a group whose leader is still reading the prompt.
  bool WaitsForLeader(const Active& a) const;
  // Back to the waiting queue, its blocks freed; recomputed when readmitted.
  void Preempt(Active& a, bool for_priority);
  // Whether `a` is served before `b`: lower priority value, then earlier arrival.
  static bool Outranks(const Active& a, const Active& b);
  // Into the waiting queue, after every request that outranks it.
  void Enqueue(ActivePtr a);
  // The running request every other running one outranks (null: none).
  Active* LowestRunning() const;
  int64_t EstimateBlocks(int64_t cached, int64_t new_tokens) const;
  // Scores the prompt tokens that this step's chunk of `a` (at a.cached, its
  // logits `rows` [chunk tokens * vocab]) predicts and that are not scored yet.
  void ScorePrompt(Active& a, const std::vector<float>& rows) const;
  void ApplyResult(const std::vector<Active*>& planned, const std::vector<SequenceChunk>& batch,
                   const StepResult& result);
  void Emit(Active& a, bool finished, Status status);
  // Queue, running and KV-usage gauges from the step thread's own state.
  void SyncCounts();
  void PublishCounts();

  StepEngine* engine_;
  SchedulerOptions opts_;
  SchedulerObserver* observer_;
  StepEngineInfo info_;
  std::vector<double> route_fraction_;  // per routed layer, observed compute fraction (EMA)

  // Shared with other threads.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ActivePtr> inbox_;  // submitted, not yet seen by the step thread
  std::set<Handle> cancel_;
  bool admitting_ = true;
  bool cancel_all_ = false;
  bool wake_ = false;
  Status cancel_all_status_;
  Handle next_handle_ = 1;
  int64_t waiting_count_ = 0;  // inbox_ + waiting_
  int64_t running_count_ = 0;

  // Step thread only.
  std::deque<ActivePtr> waiting_;            // ordered by Outranks: priority, then arrival
  std::map<Handle, ActivePtr> running_;      // ordered by arrival (handles increase)
  std::map<Handle, Status> group_failed_;    // requests to end because another of their group failed
};

}  // namespace modserve
