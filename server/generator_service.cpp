#include "server/generator_service.h"

#include <algorithm>
#include <chrono>
#include <atomic>
#include <deque>
#include <mutex>
#include <random>

#include "proto/grpc_code_name.h"
#include "server/grpc_status.h"
#include "server/request_decoding.h"
#include "server/wire_bytes.h"

namespace modserve {
namespace {

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// The scheduler's sink and a reactor meet here: the sink delivers under `mu`
// while the reactor lives; OnDone clears `target` before the reactor goes.
class UpdateTarget {
 public:
  virtual ~UpdateTarget() = default;
  // On the step thread: take in an update of completion `index` (cheap; no gRPC calls).
  virtual void DeliverLocked(int index, RequestUpdate u) = 0;
  // On the write dispatcher's thread: start the write or finish the RPC.
  virtual void FlushLocked() = 0;
};

// The serialized form of a response, for the raw-bytes methods.
grpc::ByteBuffer Serialize(const v1::GenerateResponse& m) {
  grpc::Slice slice(m.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

struct Link {
  std::mutex mu;
  UpdateTarget* target = nullptr;
};

UpdateSink MakeSink(std::shared_ptr<Link> link, int index) {
  return [link, index](RequestUpdate u) {
    std::lock_guard<std::mutex> lock(link->mu);
    if (link->target != nullptr) link->target->DeliverLocked(index, std::move(u));
  };
}

// What both Generate reactors share: the request's n completions go to the
// scheduler with sinks bound to this reactor; a client cancel is passed on
// to all of them; before the reactor is deleted it unlinks itself from the
// sinks and, with a request log, writes the call's line.
template <typename Base>
class RequestReactor : public Base, public UpdateTarget {
 public:
  void OnCancel() override {
    if (submitted_.load(std::memory_order_acquire)) {
      for (Scheduler::Handle h : handles_) svc_->Cancel(h);
    }
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      link_->target = nullptr;
      if (svc_->request_log() != nullptr) {
        if (!finish_called_) {  // defensive: gRPC calls OnDone only after Finish
          record_.code = "CANCELLED";
          record_.message = "the call ended before the server answered";
        }
        record_.duration_seconds = std::chrono::duration<double>(Clock::now() - arrival_).count();
        if (record_.code == "OK") {
          std::string reasons;  // each completion's, in index order
          for (const std::string& r : finish_reasons_) reasons += (reasons.empty() ? "" : ",") + r;
          record_.finish_reason = reasons;
          record_.stops = stops_;
        }
        svc_->request_log()->Write(FormatRequestRecord(record_, std::chrono::system_clock::now()));
      }
    }
    GeneratorService* svc = svc_;
    delete this;
    svc->ReactorDone();
  }

 protected:
  RequestReactor(GeneratorService* svc, grpc::CallbackServerContext* ctx, const char* rpc)
      : svc_(svc), link_(std::make_shared<Link>()) {
    svc_->ReactorStarted();
    link_->target = this;
    if (svc_->request_log() != nullptr) {
      record_.rpc = rpc;
      record_.peer = ctx->peer();
    }
  }

  // Every update passes here first (under link_->mu): the request log's
  // first-token time and, on each completion's last update, its finish
  // reason and usage (the prompt's tokens once, the rest summed).
  void NoteUpdateLocked(int index, const RequestUpdate& u) {
    if (!u.token_ids.empty() && record_.ttft_seconds < 0) {
      record_.ttft_seconds = std::chrono::duration<double>(Clock::now() - arrival_).count();
    }
    if (!u.finished || !u.status.ok()) return;
    finish_reasons_[static_cast<size_t>(index)] = FinishReasonName(u.finish_reason);
    stops_[static_cast<size_t>(index)] = {u.stop_string, u.stop_token_id};
    auto add = [](int64_t* total, int64_t v) { *total = std::max<int64_t>(*total, 0) + v; };
    record_.prompt_tokens = u.usage.prompt_tokens;
    add(&record_.completion_tokens, u.usage.completion_tokens);
    add(&record_.cached_prompt_tokens, u.usage.cached_prompt_tokens);
    add(&record_.routed_computed, u.usage.routed_computed());
    add(&record_.routed_skipped, u.usage.routed_skipped());
  }

  // The client is gone (under link_->mu): every completion is stopped (at
  // once if they are submitted, else as soon as Start has their handles).
  void StopCompletionsLocked() {
    if (submitted_.load(std::memory_order_relaxed)) {
      for (Scheduler::Handle h : handles_) svc_->Cancel(h);  // a no-op for those already ended
    } else {
      stop_on_submit_ = true;
    }
  }

  // Ends the RPC with `s` (under link_->mu), noting it for the request log.
  void FinishLocked(const grpc::Status& s) {
    finish_called_ = true;
    record_.code = GrpcCodeName(s.error_code());
    record_.message = s.error_message();
    if (!s.ok()) {  // e.g. the last write failed after the final update: not a finished call
      record_.finish_reason.clear();
      record_.prompt_tokens = record_.completion_tokens = record_.cached_prompt_tokens = -1;
      record_.routed_computed = record_.routed_skipped = -1;
    }
    this->Finish(s);
  }

  // Asks the write dispatcher to call FlushLocked (once per batch of updates).
  void ScheduleFlushLocked() {
    if (flush_posted_) return;
    flush_posted_ = true;
    svc_->PostWrite([link = link_] {
      std::lock_guard<std::mutex> lock(link->mu);
      if (link->target != nullptr) link->target->FlushLocked();
    });
  }

  // Validates and submits (updates may arrive on the step thread at once).
  Status Start(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer& req) {
    ctx_ = ctx;
    GeneratorService::Submission sub;
    const Status prepared = svc_->Prepare(ctx, req, &sub);
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      request_id_ = sub.request_id;
      record_.request_id = sub.request_id;
      record_.n = static_cast<int64_t>(sub.requests.size());
      record_.priority = sub.requests.empty() ? 0 : sub.requests.front().priority;
      completions_ = std::max<int>(1, static_cast<int>(sub.requests.size()));
      finish_reasons_.assign(static_cast<size_t>(completions_), "");
      stops_.assign(static_cast<size_t>(completions_), StopMatch{});
      record_.guide = sub.guide;
    }
    if (!prepared.ok()) return prepared;
    std::vector<UpdateSink> sinks;
    for (int i = 0; i < completions_; ++i) sinks.push_back(MakeSink(link_, i));
    auto handles = svc_->Enqueue(std::move(sub.requests), std::move(sinks));
    std::lock_guard<std::mutex> lock(link_->mu);
    if (!handles.ok()) return handles.status();
    handles_ = std::move(*handles);
    submitted_.store(true, std::memory_order_release);
    if (stop_on_submit_) StopCompletionsLocked();
    return Status::Ok();
  }

  // The request id goes out as initial metadata: at once for an accepted
  // call (`send_now`), else with the first write or the Finish.
  void AddInitialMetadataLocked(bool send_now) {
    if (metadata_added_) return;
    metadata_added_ = true;
    if (!request_id_.empty()) ctx_->AddInitialMetadata("x-request-id", request_id_);
    if (send_now) this->StartSendInitialMetadata();
  }

  GeneratorService* svc_;
  std::shared_ptr<Link> link_;
  std::string request_id_;       // set by Start, before any update is delivered to the reactor's state
  int completions_ = 1;          // n, set by Start
  // The completions' handles: written once by Start, then submitted_ is set.
  std::vector<Scheduler::Handle> handles_;
  std::atomic<bool> submitted_{false};
  grpc::CallbackServerContext* ctx_ = nullptr;
  bool stop_on_submit_ = false;  // under link_->mu: the client went away before Start had the handles
  bool flush_posted_ = false;    // under link_->mu
  bool metadata_added_ = false;  // under link_->mu
  bool finish_called_ = false;   // under link_->mu
  Clock::time_point arrival_ = Clock::now();
  RequestRecord record_;         // under link_->mu (filled only with a request log)
  std::vector<std::string> finish_reasons_;  // under link_->mu: per completion, for the log
  std::vector<StopMatch> stops_;             // likewise: what stopped each completion
};

// Unary Generate: collects every update into one response (n > 1: one per
// completion, in `completions`).
class UnaryReactor final : public RequestReactor<grpc::ServerUnaryReactor> {
 public:
  UnaryReactor(GeneratorService* svc, grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
               grpc::ByteBuffer* resp)
      : RequestReactor(svc, ctx, "Generate"), resp_(resp) {
    Status started = Start(ctx, *req);
    std::lock_guard<std::mutex> lock(link_->mu);
    AddInitialMetadataLocked(/*send_now=*/started.ok() && !finished_);
    if (!started.ok()) {
      finished_ = true;
      FinishLocked(ToGrpcStatus(started));
    }
  }

  void DeliverLocked(int index, RequestUpdate u) override {
    if (finished_) return;
    if (responses_.empty()) responses_.resize(static_cast<size_t>(completions_));
    NoteUpdateLocked(index, u);
    svc_->AppendUpdate(u, request_id_, index, &responses_[static_cast<size_t>(index)]);
    if (!u.finished) return;
    if (u.status.ok() && ++ended_ < completions_) return;
    finished_ = true;  // all ended, or one failed (the scheduler stops the others)
    final_ = ToGrpcStatus(u.status);
    ScheduleFlushLocked();
  }

  void FlushLocked() override {
    flush_posted_ = false;
    AddInitialMetadataLocked(/*send_now=*/false);
    if (final_.ok() && responses_.size() == 1) {
      *resp_ = Serialize(responses_.front());
    } else if (final_.ok()) {
      v1::GenerateResponse all;
      all.set_request_id(request_id_);
      all.mutable_prompt_logprobs()->Swap(responses_.front().mutable_prompt_logprobs());
      for (auto& r : responses_) all.add_completions()->Swap(&r);
      *resp_ = Serialize(all);
    }
    FinishLocked(final_);
  }

 private:
  grpc::ByteBuffer* resp_;
  std::vector<v1::GenerateResponse> responses_;  // under link_->mu: per completion
  int ended_ = 0;          // under link_->mu: completions ended OK
  bool finished_ = false;  // under link_->mu
  grpc::Status final_;     // under link_->mu
};

// GenerateStream: a response per update, one write in flight.
class StreamReactor final : public RequestReactor<grpc::ServerWriteReactor<grpc::ByteBuffer>> {
 public:
  StreamReactor(GeneratorService* svc, grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req)
      : RequestReactor(svc, ctx, "GenerateStream") {
    Status started = Start(ctx, *req);
    std::lock_guard<std::mutex> lock(link_->mu);
    AddInitialMetadataLocked(/*send_now=*/started.ok() && !final_known_ && !writing_);
    if (!started.ok()) {
      final_ = ToGrpcStatus(started);
      final_known_ = true;
      WriteNextLocked();
    }
  }

  void DeliverLocked(int index, RequestUpdate u) override {
    if (final_known_) return;
    NoteUpdateLocked(index, u);
    if (u.finished && !u.status.ok()) {
      final_known_ = true;
      final_ = ToGrpcStatus(u.status);
      pending_.clear();  // failed: nothing more to send but the status (the scheduler stops the others)
    } else if (u.finished && ++ended_ == completions_) {
      final_known_ = true;
      final_ = grpc::Status::OK;
    }
    if (u.status.ok()) {
      // While a write is in flight, updates merge into the newest queued
      // message of the same completion: a slow reader gets fewer, larger
      // messages, never a backlog (n > 1: at most one queued message per
      // completion, and its last). A completion's last message is never merged into.
      auto open = std::find_if(pending_.rbegin(), pending_.rend(), [index](const v1::GenerateResponse& m) { return m.index() == index; });
      if (open == pending_.rend() || open->has_usage()) {
        pending_.emplace_back();
        open = pending_.rbegin();
      }
      svc_->AppendUpdate(u, request_id_, index, &*open);
    }
    if (!writing_) ScheduleFlushLocked();
  }

  void FlushLocked() override {
    flush_posted_ = false;
    if (!writing_) WriteNextLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(link_->mu);
    writing_ = false;
    if (!ok) {  // the stream is broken (client gone): stop the request
      if (!final_known_) StopCompletionsLocked();
      final_known_ = true;
      final_ = grpc::Status(grpc::StatusCode::CANCELLED, "stream write failed: the client went away");
      pending_.clear();
    }
    WriteNextLocked();
  }

 private:
  void WriteNextLocked() {
    if (finish_called_) return;
    AddInitialMetadataLocked(/*send_now=*/false);
    if (!pending_.empty()) {
      current_ = Serialize(pending_.front());
      pending_.pop_front();
      writing_ = true;
      StartWrite(&current_);
    } else if (final_known_) {
      FinishLocked(final_);
    }
  }

  // Under link_->mu:
  std::deque<v1::GenerateResponse> pending_;
  grpc::ByteBuffer current_;  // the message being written
  bool writing_ = false;
  bool final_known_ = false;
  int ended_ = 0;  // completions ended OK
  grpc::Status final_;
};

}  // namespace

void GeneratorService::Attach(Scheduler* scheduler, ServedModel model, ServerMetrics* metrics) {
  metrics_ = metrics;
  model_ = std::make_shared<const ServedModel>(std::move(model));
  seed_base_ = std::random_device{}();
  scheduler_.store(scheduler);
}

Status GeneratorService::Authenticate(const grpc::CallbackServerContext* ctx) const {
  if (!auth_.enabled()) return Status::Ok();
  const auto& md = ctx->client_metadata();
  const auto it = md.find("authorization");
  std::optional<std::string_view> value;
  if (it != md.end()) value = std::string_view(it->second.data(), it->second.size());
  return auth_.Check(value);
}

Status GeneratorService::CheckReady(const grpc::CallbackServerContext* ctx) const {
  MODSERVE_RETURN_IF_ERROR(Authenticate(ctx));
  if (scheduler_.load() == nullptr) return Unavailable("the model is still loading; retry shortly");
  return Status::Ok();
}

Status GeneratorService::Prepare(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer& bytes, Submission* sub) {
  if (Status ready = CheckReady(ctx); !ready.ok()) {
    // A refused token is counted once the metrics exist (Attach sets them before the scheduler).
    ServerMetrics* metrics = attached_metrics();
    if (ready.code() == StatusCode::kUnauthenticated && metrics != nullptr) metrics->CountRejected(ready.code());
    return ready;
  }
  auto request = DecodeGenerateRequest(WireBytes(bytes));
  if (!request.ok()) {
    metrics_->CountRejected(request.status().code());
    return request.status();
  }
  // The client's id, when usable, names the call even if validation refuses it.
  if (request->has_request_id() && IsValidRequestId(request->request_id())) sub->request_id = request->request_id();
  const uint64_t n = next_id_.fetch_add(1);
  auto g = ValidateGenerateRequest(*request, model_->validation, seed_base_ + n * 0x9E3779B97F4A7C15ull,
                                   "req-" + std::to_string(n));
  if (!g.ok()) {
    metrics_->CountRejected(g.status().code());
    return g.status();
  }
  sub->request_id = g->request_id;
  sub->guide = GuideKind(*request);
  const auto deadline = ctx->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    g->deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - std::chrono::system_clock::now());
  }
  // Completion i samples with seed + i; the prompt is scored once, with completion 0.
  const int completions = std::max(1, request->n());
  for (int i = 1; i < completions; ++i) {
    GenerationRequest copy = *g;
    copy.sampling.seed += static_cast<uint64_t>(i);
    copy.return_prompt_logprobs = false;
    sub->requests.push_back(std::move(copy));
  }
  sub->requests.insert(sub->requests.begin(), std::move(*g));
  return Status::Ok();
}

StatusOr<std::vector<Scheduler::Handle>> GeneratorService::Enqueue(std::vector<GenerationRequest> requests,
                                                                   std::vector<UpdateSink> sinks) {
  auto h = scheduler_.load()->SubmitGroup(std::move(requests), std::move(sinks));
  if (!h.ok()) metrics_->CountRejected(h.status().code());
  return h;
}

void GeneratorService::Cancel(Scheduler::Handle h) {
  Scheduler* scheduler = scheduler_.load();
  if (scheduler != nullptr) scheduler->Cancel(h);
}

void GeneratorService::AppendUpdate(const RequestUpdate& u, const std::string& request_id, int index,
                                    v1::GenerateResponse* out) const {
  out->set_request_id(request_id);
  out->set_index(index);
  out->mutable_text()->append(u.text);
  for (int64_t t : u.token_ids) out->add_token_ids(static_cast<int32_t>(t));
  const auto& routed = model_->routed_layers;
  for (uint64_t bits : u.routes) {
    auto* route = out->add_routes();
    for (size_t i = 0; i < routed.size(); ++i) {
      if ((bits >> i) & 1) route->add_computed_layers(static_cast<int32_t>(routed[i]));
    }
  }
  auto set = [](const TokenLogprob& from, v1::Logprob* to) {
    to->set_token_id(static_cast<int32_t>(from.token));
    to->set_logprob(from.logprob);
  };
  auto add = [&set](const TokenLogprobs& lp, v1::TokenLogprobs* entry) {
    set(lp.chosen, entry->mutable_token());
    for (const TokenLogprob& alt : lp.top) set(alt, entry->add_top());
  };
  for (const TokenLogprobs& lp : u.logprobs) add(lp, out->add_logprobs());
  for (const TokenLogprobs& lp : u.prompt_logprobs) add(lp, out->add_prompt_logprobs());
  if (!u.finished || !u.status.ok()) return;
  out->set_finish_reason(ToProto(u.finish_reason));
  if (u.stop_token_id >= 0) {
    out->set_stop_token_id(static_cast<int32_t>(u.stop_token_id));
  } else if (u.finish_reason == FinishReason::kStop) {
    out->set_stop_string(u.stop_string);
  }
  auto* usage = out->mutable_usage();
  usage->set_prompt_tokens(static_cast<int32_t>(u.usage.prompt_tokens));
  usage->set_completion_tokens(static_cast<int32_t>(u.usage.completion_tokens));
  usage->set_cached_prompt_tokens(static_cast<int32_t>(u.usage.cached_prompt_tokens));
  usage->set_routed_computed(u.usage.routed_computed());
  usage->set_routed_skipped(u.usage.routed_skipped());
  for (const auto& l : u.usage.layers) {
    auto* lu = usage->add_layers();
    lu->set_layer(static_cast<int32_t>(l.layer));
    lu->set_computed(l.computed);
    lu->set_skipped(l.skipped);
  }
}

void GeneratorService::ReactorStarted() {
  std::lock_guard<std::mutex> lock(reactors_mu_);
  ++active_reactors_;
}

void GeneratorService::ReactorDone() {
  std::lock_guard<std::mutex> lock(reactors_mu_);
  if (--active_reactors_ == 0) reactors_cv_.notify_all();
}

bool GeneratorService::WaitForReactors(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(reactors_mu_);
  return reactors_cv_.wait_until(lock, deadline, [&] { return active_reactors_ == 0; });
}

grpc::ServerUnaryReactor* GeneratorService::Generate(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  return new UnaryReactor(this, ctx, request, response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* GeneratorService::GenerateStream(grpc::CallbackServerContext* ctx,
                                                                             const grpc::ByteBuffer* request) {
  return new StreamReactor(this, ctx, request);
}

grpc::ServerUnaryReactor* GeneratorService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                         const v1::GetModelInfoRequest* /*request*/,
                                                         v1::ModelInfo* response) {
  auto* reactor = ctx->DefaultReactor();
  Status ready = CheckReady(ctx);
  if (ready.ok()) *response = model_->info;
  reactor->Finish(ToGrpcStatus(ready));
  return reactor;
}

}  // namespace modserve
