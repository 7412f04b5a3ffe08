#include "server/scheduler.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "server/utf8_stream.h"

namespace modserve {

int64_t RequestUsage::routed_computed() const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.computed;
  return n;
}

int64_t RequestUsage::routed_skipped() const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.skipped;
  return n;
}

// One accepted request, from Submit until its last update.
struct Scheduler::Active {
  Active(Handle h, GenerationRequest r, UpdateSink s)
      : handle(h),
        req(std::move(r)),
        sink(std::move(s)),
        sampler(req.sampling, req.prompt),
        gen(req.stop),
        tokens(req.prompt) {}

  Handle handle;
  GenerationRequest req;
  UpdateSink sink;
  Sampler sampler;
  GenerationState gen;
  Utf8StreamDecoder utf8;
  std::vector<int64_t> tokens;  // prompt + generated; the last generated one is not in the cache yet
  int64_t cached = 0;           // tokens the engine holds for this request
  int64_t routes_counted = 0;   // tokens whose routes are in `usage` (recomputation counts once)
  bool in_engine = false;
  bool ran = false;             // a step of it applied (a preempted request comes back)
  int64_t lookup_queried = -1;  // tokens looked up in the prefix cache at the last admission; -1: none pending
  // A group (SubmitGroup) holds the handles [group, group + group_size).
  Handle group = 0;
  int64_t group_size = 1;
  // With prefix caching, a later completion of a group: it waits for the
  // group's first request (`group`, the leader) to put the prompt in the cache.
  bool follows_leader = false;
  size_t text_sent = 0;         // bytes of gen.text() already passed to utf8
  Clock::time_point arrival = Clock::now();
  Clock::time_point last_token;
  RequestUsage usage;
  std::vector<int64_t> new_ids;             // generated since the last update
  std::vector<uint64_t> new_routes;         // routes of new_ids, when asked
  std::vector<TokenLogprobs> new_logprobs;  // logprobs of new_ids, when asked
  // With return_prompt_logprobs: prompt positions scored (token k + 1 is
  // scored from the logits after position k), and the scores not yet sent.
  int64_t prompt_scored = 0;
  std::vector<TokenLogprobs> new_prompt_logprobs;
  bool wants_prompt_logits() const {
    return req.return_prompt_logprobs && prompt_scored + 1 < static_cast<int64_t>(req.prompt.size());
  }
};

Scheduler::Scheduler(StepEngine* engine, SchedulerOptions opts, SchedulerObserver* observer)
    : engine_(engine), opts_(opts), observer_(observer), info_(engine->Info()) {
  route_fraction_.assign(info_.routed_layers.size(), info_.capacity);
}

Scheduler::~Scheduler() = default;

StatusOr<Scheduler::Handle> Scheduler::Submit(GenerationRequest request, UpdateSink sink) {
  std::vector<GenerationRequest> one;
  one.push_back(std::move(request));
  std::vector<UpdateSink> sinks;
  sinks.push_back(std::move(sink));
  auto handles = SubmitGroup(std::move(one), std::move(sinks));
  if (!handles.ok()) return handles.status();
  return handles->front();
}

StatusOr<std::vector<Scheduler::Handle>> Scheduler::SubmitGroup(std::vector<GenerationRequest> requests,
                                                                std::vector<UpdateSink> sinks) {
  if (requests.empty() || requests.size() != sinks.size()) {
    return InvalidArgument("a group needs one sink per request and at least one request");
  }
  for (const GenerationRequest& request : requests) {
    // A request must fit in an empty pool even if every routed layer were dense.
    const int64_t max_len = std::min<int64_t>(info_.max_context, static_cast<int64_t>(request.prompt.size()) + request.stop.max_tokens);
    const int64_t worst = info_.n_layers * ((max_len + info_.block_size - 1) / info_.block_size);
    if (worst > info_.total_blocks) {
      return ResourceExhausted("request needs up to " + std::to_string(worst) + " KV blocks but the pool holds " +
                               std::to_string(info_.total_blocks) + "; lower max_tokens or the prompt length");
    }
  }
  const auto n = static_cast<int64_t>(requests.size());
  if (n > opts_.max_queue) {
    return InvalidArgument("n = " + std::to_string(n) + " completions can never be queued together: the queue holds " +
                           std::to_string(opts_.max_queue) + " requests (max_queue)");
  }
  // Later completions wait for the first only if there is a whole block of prompt to share.
  const bool share = info_.prefix_caching && static_cast<int64_t>(requests.front().prompt.size()) > info_.block_size;
  std::vector<Handle> handles;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!admitting_) return Unavailable("server is shutting down and accepts no new requests");
    if (waiting_count_ + n > opts_.max_queue) {
      if (n == 1) {
        return ResourceExhausted("request queue is full (" + std::to_string(opts_.max_queue) +
                                 " waiting requests); retry later");
      }
      return ResourceExhausted("request queue has room for " + std::to_string(opts_.max_queue - waiting_count_) +
                               " of its " + std::to_string(opts_.max_queue) + " waiting requests, and this request's n = " +
                               std::to_string(n) + " completions need " + std::to_string(n) + "; retry later");
    }
    for (int64_t i = 0; i < n; ++i) {
      const Handle h = next_handle_++;
      auto a = std::make_unique<Active>(h, std::move(requests[static_cast<size_t>(i)]), std::move(sinks[static_cast<size_t>(i)]));
      a->follows_leader = i > 0 && share;
      a->group = i == 0 ? h : handles.front();
      a->group_size = n;
      handles.push_back(h);
      inbox_.push_back(std::move(a));
    }
    waiting_count_ += n;
  }
  cv_.notify_one();
  PublishCounts();
  return handles;
}

void Scheduler::Cancel(Handle h) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_.insert(h);
  }
  cv_.notify_one();
}

void Scheduler::StopAdmitting() {
  std::lock_guard<std::mutex> lock(mu_);
  admitting_ = false;
}

void Scheduler::CancelAll(Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_all_ = true;
    cancel_all_status_ = std::move(status);
  }
  cv_.notify_one();
}

void Scheduler::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_one();
}

void Scheduler::WaitForWork(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return wake_ || !inbox_.empty() || !cancel_.empty() || cancel_all_; });
  wake_ = false;
}

int64_t Scheduler::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_count_;
}

int64_t Scheduler::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_count_;
}

void Scheduler::SyncCounts() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t inbox = static_cast<int64_t>(inbox_.size());
    waiting_count_ = inbox + static_cast<int64_t>(waiting_.size());
    running_count_ = static_cast<int64_t>(running_.size());
  }
  PublishCounts();
  if (observer_ != nullptr && info_.total_blocks > 0) {
    const auto total = static_cast<double>(info_.total_blocks);
    observer_->OnKvUsage(static_cast<double>(info_.total_blocks - engine_->FreeBlocks()) / total);
    if (info_.prefix_caching) observer_->OnPrefixCacheUsage(static_cast<double>(engine_->CachedBlocks()) / total);
  }
}

void Scheduler::PublishCounts() {
  if (observer_ == nullptr) return;
  int64_t w, r;
  {
    std::lock_guard<std::mutex> lock(mu_);
    w = waiting_count_;
    r = running_count_;
  }
  observer_->OnQueueChanged(w, r);
}

bool Scheduler::Outranks(const Active& a, const Active& b) {
  return a.req.priority != b.req.priority ? a.req.priority < b.req.priority : a.handle < b.handle;
}

void Scheduler::Enqueue(ActivePtr a) {
  // After every request that outranks it: a newcomer of the lowest priority
  // goes to the end (first come, first served), a preempted request before
  // the later arrivals of its priority.
  auto at = std::upper_bound(waiting_.begin(), waiting_.end(), a,
                             [](const ActivePtr& x, const ActivePtr& y) { return Outranks(*x, *y); });
  waiting_.insert(at, std::move(a));
}

Scheduler::Active* Scheduler::LowestRunning() const {
  Active* lowest = nullptr;
  for (const auto& [h, a] : running_) {
    if (lowest == nullptr || Outranks(*lowest, *a)) lowest = a.get();
  }
  return lowest;
}

void Scheduler::TakeInboxAndEndCancelled() {
  std::set<Handle> cancel;
  bool all = false;
  Status all_status;
  {
    // The inbox and the cancels are taken under one lock: a request
    // submitted and cancelled between two takes would otherwise have its
    // cancel swept before the request left the inbox, and run to the end.
    std::lock_guard<std::mutex> lock(mu_);
    while (!inbox_.empty()) {
      Enqueue(std::move(inbox_.front()));
      inbox_.pop_front();
    }
    cancel.swap(cancel_);
    all = cancel_all_;
    all_status = cancel_all_status_;
    cancel_all_ = false;
  }
  const auto now = Clock::now();
  auto verdict = [&](const Active& a) -> Status {
    if (all) return all_status;
    // The deadline before the cancel: gRPC ends a call whose deadline
    // passed by cancelling it, so both arrive together and the expiry is the cause.
    if (now >= a.req.deadline) return DeadlineExceeded("deadline expired after " + std::to_string(a.gen.tokens().size()) + " generated tokens");
    if (cancel.count(a.handle)) return Cancelled("request cancelled by the client");
    if (const auto it = group_failed_.find(a.handle); it != group_failed_.end()) return it->second;
    return Status::Ok();
  };
  // Another sweep while requests of a failed group are left (one that ended
  // may have been passed over already in this sweep).
  // Ends the requests of `queue` (running_ or waiting_) that have a verdict;
  // `active` gives an entry's request.
  auto sweep = [&](auto& queue, auto active) {
    for (auto it = queue.begin(); it != queue.end();) {
      Status s = verdict(*active(*it));
      if (s.ok()) {
        ++it;
        continue;
      }
      ActivePtr a = std::move(active(*it));
      it = queue.erase(it);
      Finish(*a, s);
    }
  };
  size_t ended = 0;
  do {
    const size_t before = running_.size() + waiting_.size();
    sweep(running_, [](auto& entry) -> ActivePtr& { return entry.second; });
    sweep(waiting_, [](ActivePtr& entry) -> ActivePtr& { return entry; });
    ended = before - running_.size() - waiting_.size();
  } while (!group_failed_.empty() && ended > 0);
}

int64_t Scheduler::EstimateBlocks(int64_t cached, int64_t new_tokens) const {
  const int64_t bs = info_.block_size;
  auto blocks = [bs](double tokens) { return static_cast<int64_t>(std::ceil(tokens / static_cast<double>(bs))); };
  // Layers where every token writes K/V: the unrouted ones, and in
  // integrated MoDE the routed ones too.
  const int64_t n_sparse = info_.routed_layers_keep_kv ? 0 : static_cast<int64_t>(info_.routed_layers.size());
  int64_t need = (info_.n_layers - n_sparse) * (blocks(static_cast<double>(cached + new_tokens)) - blocks(static_cast<double>(cached)));
  if (n_sparse == 0) return need;
  for (double f : route_fraction_) {
    need += blocks(f * static_cast<double>(cached + new_tokens)) - blocks(f * static_cast<double>(cached));
  }
  return need;
}

void Scheduler::Emit(Active& a, bool finished, Status status) {
  const std::string& text = a.gen.text();
  const size_t stable = finished ? text.size() : std::max(a.text_sent, std::min(text.size(), a.gen.StableLength()));
  RequestUpdate u;
  if (stable > a.text_sent) u.text = a.utf8.Push(std::string_view(text).substr(a.text_sent, stable - a.text_sent));
  a.text_sent = stable;
  if (finished) u.text += a.utf8.Flush();
  if (!finished && u.text.empty() && a.new_ids.empty()) return;
  u.token_ids.swap(a.new_ids);
  u.routes.swap(a.new_routes);
  u.logprobs.swap(a.new_logprobs);
  u.prompt_logprobs.swap(a.new_prompt_logprobs);
  u.finished = finished;
  if (finished) {
    u.status = std::move(status);
    u.finish_reason = a.gen.finish_reason();
    if (a.gen.matched_stop() >= 0) u.stop_string = a.req.stop.stop[static_cast<size_t>(a.gen.matched_stop())];
    u.stop_token_id = a.gen.matched_stop_token();
    a.usage.prompt_tokens = static_cast<int64_t>(a.req.prompt.size());
    a.usage.completion_tokens = static_cast<int64_t>(a.gen.tokens().size());
    u.usage = a.usage;
  }
  a.sink(std::move(u));
}

void Scheduler::Finish(Active& a, Status status) {
  if (a.in_engine) {
    engine_->Release(a.handle);
    a.in_engine = false;
  }
  group_failed_.erase(a.handle);
  if (!status.ok() && a.group_size > 1) StopGroup(a, status);
  // Counted, and its blocks and slot shown as free, before the final update
  // goes out, so a client that has it finds the request in /metrics.
  SyncCounts();
  if (observer_ != nullptr) {
    const double secs = std::chrono::duration<double>(Clock::now() - a.arrival).count();
    observer_->OnRequestDone(a.gen.finish_reason(), status.code(), secs, static_cast<int64_t>(a.req.prompt.size()),
                             static_cast<int64_t>(a.gen.tokens().size()));
  }
  Emit(a, /*finished=*/true, std::move(status));
}

void Scheduler::Admit(Active& a) {
  if (!info_.prefix_caching) return;
  // Positions whose logits a prompt-logprobs request still needs cannot come
  // from the cache, nor can the last token (it is stepped for its logits).
  const auto limit = std::min<int64_t>(a.wants_prompt_logits() ? a.prompt_scored : static_cast<int64_t>(a.tokens.size()),
                                       static_cast<int64_t>(a.tokens.size()) - 1);
  // Called even with nothing to look up: it sets the salt the request's own prefixes are cached under.
  a.cached = engine_->MatchPrefix(static_cast<SeqId>(a.handle), a.tokens, limit, a.req.cache_salt);
  if (limit > 0) a.lookup_queried = limit;
}

void Scheduler::NoteFirstRun(Active& a) {
  // Only a request's first run counts: cached_prompt_tokens are prompt tokens
  // this request never ran (an admission whose step failed does not count),
  // and a preempted request's recomputation is not a prompt lookup.
  if (!a.ran && a.lookup_queried >= 0) {
    a.usage.cached_prompt_tokens = std::min<int64_t>(a.cached, static_cast<int64_t>(a.req.prompt.size()));
    if (observer_ != nullptr) observer_->OnPrefixLookup(a.lookup_queried, a.cached);
  }
  a.ran = true;
  a.lookup_queried = -1;
}

void Scheduler::StopGroup(const Active& failed, const Status& why) {
  const Status stop = Cancelled("another completion of the request ended first with " + std::string(StatusCodeName(why.code())) +
                                ": " + why.message());
  for (Handle h = failed.group; h < failed.group + static_cast<Handle>(failed.group_size); ++h) {
    const bool alive = running_.count(h) != 0 ||
                       std::any_of(waiting_.begin(), waiting_.end(), [h](const ActivePtr& w) { return w->handle == h; });
    if (h != failed.handle && alive) group_failed_.emplace(h, stop);
  }
}

bool Scheduler::WaitsForLeader(const Active& a) const {
  if (!a.follows_leader || a.ran) return false;
  // The leader ranks before it (same priority, earlier handle), so with `a`
  // at the head of the queue it is running or gone; gone (ended): no wait.
  const auto it = running_.find(a.group);
  return it != running_.end() && it->second->cached < static_cast<int64_t>(it->second->req.prompt.size());
}

void Scheduler::Preempt(Active& a, bool for_priority) {
  if (observer_ != nullptr) observer_->OnPreempted(for_priority);
  engine_->Release(a.handle);
  a.in_engine = false;
  a.cached = 0;  // recomputed later from prompt + generated tokens
  ActivePtr owned = std::move(running_.at(a.handle));
  running_.erase(a.handle);
  Enqueue(std::move(owned));
}

bool Scheduler::Step() {
  TakeInboxAndEndCancelled();
  if (running_.empty() && waiting_.empty()) {
    SyncCounts();
    return false;
  }

  // Plan: decode tokens first, then prefill chunks of running requests, then admissions.
  int64_t budget = opts_.max_batch_tokens;
  int64_t prefill_budget = budget;  // capped below once decode tokens are planned
  int64_t reserve = 0;
  std::vector<Active*> planned;
  std::vector<SequenceChunk> batch;
  auto plan = [&](Active& a) {
    const int64_t left = static_cast<int64_t>(a.tokens.size()) - a.cached;
    const int64_t n = std::min<int64_t>(left, left == 1 ? budget : std::min(budget, prefill_budget));
    if (n <= 0) return;
    if (left > 1) prefill_budget -= n;
    SequenceChunk c;
    c.id = static_cast<SeqId>(a.handle);
    c.tokens.assign(a.tokens.begin() + a.cached, a.tokens.begin() + a.cached + n);
    batch.push_back(std::move(c));
    planned.push_back(&a);
    budget -= n;
    reserve += EstimateBlocks(a.cached, n);
  };
  // Where `a` is in this step's plan, and the tokens of its chunk there (0: not planned).
  auto find_planned = [&](const Active& a) -> std::pair<size_t, int64_t> {
    const auto i = static_cast<size_t>(std::find(planned.begin(), planned.end(), &a) - planned.begin());
    return {i, i < planned.size() ? static_cast<int64_t>(batch[i].tokens.size()) : 0};
  };
  // Takes `a` out of this step's plan (it is being preempted), giving back what it took.
  auto unplan = [&](Active& a) {
    const auto [i, n] = find_planned(a);
    if (n == 0) return;
    if (static_cast<int64_t>(a.tokens.size()) - a.cached > 1) prefill_budget += n;
    budget += n;
    reserve -= EstimateBlocks(a.cached, n);
    batch.erase(batch.begin() + static_cast<std::ptrdiff_t>(i));
    planned.erase(planned.begin() + static_cast<std::ptrdiff_t>(i));
  };
  for (auto& [h, a] : running_) {
    if (static_cast<int64_t>(a->tokens.size()) - a->cached == 1) plan(*a);
  }
  if (!batch.empty() && opts_.max_prefill_tokens > 0) prefill_budget = opts_.max_prefill_tokens;
  for (auto& [h, a] : running_) {
    if (static_cast<int64_t>(a->tokens.size()) - a->cached > 1) plan(*a);
  }
  // The blocks `r` would give back if preempted now: those it holds alone
  // (not those it shares with others, e.g. the prompt blocks of an n > 1
  // group: preempting it would not free them) and its reservation in this
  // step's plan.
  auto reclaimable = [&](const Active& r) {
    return engine_->ReleasableBlocks(static_cast<SeqId>(r.handle)) + EstimateBlocks(r.cached, find_planned(r).second);
  };
  int64_t free_blocks = engine_->FreeBlocks();
  std::vector<const Active*> preempted;  // for priority in this step: not readmitted in it
  while (!waiting_.empty() && std::min(budget, prefill_budget) > 0) {
    Active& a = *waiting_.front();
    if (std::find(preempted.begin(), preempted.end(), &a) != preempted.end()) break;
    if (const auto failed = group_failed_.find(a.handle); failed != group_failed_.end()) {
      const Status why = failed->second;  // another of its group failed in this step's admissions
      ActivePtr owned = std::move(waiting_.front());
      waiting_.pop_front();
      Finish(*owned, why);
      continue;
    }
    if (WaitsForLeader(a)) break;  // a few steps, while the leader reads the prompt they share
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(a.tokens.size()), std::min(budget, prefill_budget));
    const bool slot = static_cast<int64_t>(running_.size()) < opts_.max_running;
    const int64_t short_by = running_.empty() ? 0 : reserve + EstimateBlocks(0, n) - free_blocks;
    if (!slot || short_by > 0) {
      // Wait for a slot or blocks, unless a running request ranks below it.
      Active* victim = LowestRunning();
      if (victim == nullptr || victim->req.priority <= a.req.priority) break;
      if (short_by > 0) {
        // Short of blocks (with or without a slot): preempt nothing unless
        // all those below `a` could make room (a slot alone would not admit it).
        int64_t below = 0;
        for (const auto& [h, r] : running_) {
          if (r->req.priority > a.req.priority) below += reclaimable(*r);
        }
        if (below < short_by) break;
      }
      preempted.push_back(victim);
      unplan(*victim);
      Preempt(*victim, /*for_priority=*/true);  // queued behind `a`: it ranks lower
      free_blocks = engine_->FreeBlocks();
      continue;
    }
    Status s = engine_->AddSequence(static_cast<SeqId>(a.handle));
    ActivePtr owned = std::move(waiting_.front());
    waiting_.pop_front();
    if (!s.ok()) {
      Finish(*owned, s);
      continue;
    }
    owned->in_engine = true;
    Active* raw = owned.get();
    Admit(*raw);
    free_blocks = engine_->FreeBlocks();  // a prefix match takes cached blocks and copies partial ones
    running_.emplace(raw->handle, std::move(owned));
    plan(*raw);
  }
  SyncCounts();
  if (batch.empty()) return !running_.empty();

  // Run; when the pool is short, preempt the lowest-ranked (newest of the lowest priority) and retry.
  const auto engine_start = Clock::now();
  const bool all_logits = std::any_of(planned.begin(), planned.end(), [](const Active* a) { return a->wants_prompt_logits(); });
  StatusOr<StepResult> result = engine_->Step(batch, all_logits);
  while (!result.ok() && result.status().code() == StatusCode::kResourceExhausted && running_.size() > 1) {
    Active* victim = LowestRunning();
    unplan(*victim);
    Preempt(*victim, /*for_priority=*/false);
    if (batch.empty()) break;
    result = engine_->Step(batch, all_logits);
  }
  if (batch.empty()) {
    SyncCounts();
    return true;
  }
  if (!result.ok()) {
    // Not a memory problem we can schedule around: fail the requests in this step.
    for (Active* a : planned) {
      ActivePtr owned = std::move(running_.at(a->handle));
      running_.erase(a->handle);
      Finish(*owned, result.status());
    }
    SyncCounts();
    return true;
  }
  const double engine_seconds = std::chrono::duration<double>(Clock::now() - engine_start).count();
  // The step's counters are recorded before its tokens reach the clients, so
  // a client holding its last token finds that step in /metrics.
  if (observer_ != nullptr) {
    StepReport report;
    report.engine_seconds = engine_seconds;
    report.decode_only = result->stats.tokens == static_cast<int64_t>(batch.size());
    report.stats = &result->stats;
    report.batch_tokens = result->stats.tokens;
    report.running = static_cast<int64_t>(running_.size());
    observer_->OnStep(report);
  }
  ApplyResult(planned, batch, *result);
  SyncCounts();
  return true;
}

void Scheduler::ScorePrompt(Active& a, const std::vector<float>& rows) const {
  const auto vocab = static_cast<size_t>(info_.vocab_size);
  const auto n_rows = static_cast<int64_t>(rows.size() / vocab);  // the caller checked: chunk tokens * vocab
  // Row j holds the logits after position a.cached + j, which predict the
  // token after it; positions before prompt_scored were scored already (a
  // recomputation after a preemption), the last prompt token predicts output.
  const int64_t end = std::min(a.cached + n_rows, static_cast<int64_t>(a.req.prompt.size()) - 1);
  if (a.prompt_scored < a.cached) return;  // never: every chunk is scored while the prompt is not done
  for (; a.prompt_scored < end; ++a.prompt_scored) {
    const auto j = static_cast<size_t>(a.prompt_scored - a.cached);
    a.new_prompt_logprobs.push_back(ComputeTokenLogprobs(rows.data() + j * vocab, vocab,
                                                         a.req.prompt[static_cast<size_t>(a.prompt_scored + 1)],
                                                         a.req.top_logprobs));
  }
}

void Scheduler::ApplyResult(const std::vector<Active*>& planned, const std::vector<SequenceChunk>& batch,
                            const StepResult& result) {
  // Learn the routed layers' real compute fraction for admission estimates.
  size_t ri = 0;
  for (const auto& ls : result.stats.layers) {
    if (!ls.routed || ri >= route_fraction_.size()) continue;
    const int64_t total = ls.computed + ls.skipped;
    if (total > 0) {
      const double w = std::min(1.0, static_cast<double>(total) / 1024.0);
      route_fraction_[ri] = (1 - w) * route_fraction_[ri] + w * static_cast<double>(ls.computed) / static_cast<double>(total);
    }
    ++ri;
  }

  const auto now = Clock::now();
  const size_t n_routed = info_.routed_layers.size();
  for (size_t i = 0; i < planned.size(); ++i) {
    Active& a = *planned[i];
    const auto& routes = result.routes[i];
    if (a.usage.layers.empty()) {
      for (int64_t l : info_.routed_layers) a.usage.layers.push_back({l, 0, 0});
    }
    NoteFirstRun(a);
    for (size_t j = 0; j < routes.size(); ++j) {
      const int64_t position = a.cached + static_cast<int64_t>(j);
      if (position < a.routes_counted) continue;
      for (size_t r = 0; r < n_routed; ++r) {
        if ((routes[j] >> r) & 1) {
          ++a.usage.layers[r].computed;
        } else {
          ++a.usage.layers[r].skipped;
        }
      }
      a.routes_counted = position + 1;
    }
    if (a.wants_prompt_logits()) {
      const size_t want = batch[i].tokens.size() * static_cast<size_t>(info_.vocab_size);
      if (i >= result.all_logits.size() || result.all_logits[i].size() != want) {
        ActivePtr owned = std::move(running_.at(a.handle));
        running_.erase(a.handle);
        Finish(*owned, Internal("the engine returned no per-token logits for return_prompt_logprobs"));
        continue;
      }
      ScorePrompt(a, result.all_logits[i]);
    }
    a.cached += static_cast<int64_t>(batch[i].tokens.size());
    if (a.cached < static_cast<int64_t>(a.tokens.size())) continue;  // mid-prefill: no token yet

    const int64_t token = a.sampler.Sample(result.logits[i]);
    a.tokens.push_back(token);
    FinishReason reason = a.gen.Add(token, a.sampler.released_hold());
    a.new_ids.push_back(token);
    if (a.req.return_routes) a.new_routes.push_back(routes.empty() ? 0 : routes.back());
    if (a.req.return_logprobs) {
      a.new_logprobs.push_back(ComputeTokenLogprobs(result.logits[i], token, a.req.top_logprobs));
    }
    if (observer_ != nullptr) {
      if (a.gen.tokens().size() == 1) {
        observer_->OnFirstToken(std::chrono::duration<double>(now - a.arrival).count());
      } else {
        observer_->OnInterToken(std::chrono::duration<double>(now - a.last_token).count());
      }
    }
    a.last_token = now;
    const bool context_full = static_cast<int64_t>(a.tokens.size()) >= info_.max_context;
    if (reason == FinishReason::kNone && !context_full) {
      Emit(a, /*finished=*/false, Status::Ok());
      continue;
    }
    if (reason == FinishReason::kNone) a.gen.ForceFinish(FinishReason::kLength);
    ActivePtr owned = std::move(running_.at(a.handle));
    running_.erase(a.handle);
    Finish(*owned, Status::Ok());
  }
}

}  // namespace modserve
