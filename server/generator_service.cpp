#include "server/generator_service.h"

#include <chrono>
#include <atomic>
#include <deque>
#include <mutex>
#include <random>

#include "client/grpc_code_name.h"
#include "server/grpc_status.h"
#include "server/request_decoding.h"

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
  // On the step thread: take the update in (cheap; no gRPC calls).
  virtual void DeliverLocked(RequestUpdate u) = 0;
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

UpdateSink MakeSink(std::shared_ptr<Link> link) {
  return [link](RequestUpdate u) {
    std::lock_guard<std::mutex> lock(link->mu);
    if (link->target != nullptr) link->target->DeliverLocked(std::move(u));
  };
}

// What both Generate reactors share: the request goes to the scheduler with
// a sink bound to this reactor; a client cancel is passed on; before the
// reactor is deleted it unlinks itself from the sink and, with a request log,
// writes the call's line.
template <typename Base>
class RequestReactor : public Base, public UpdateTarget {
 public:
  void OnCancel() override {
    if (handle_ != 0) svc_->Cancel(handle_);
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
  // first-token time and, on the last update, the finish reason and usage.
  void NoteUpdateLocked(const RequestUpdate& u) {
    if (!u.token_ids.empty() && record_.ttft_seconds < 0) {
      record_.ttft_seconds = std::chrono::duration<double>(Clock::now() - arrival_).count();
    }
    if (!u.finished || !u.status.ok()) return;
    record_.finish_reason = FinishReasonName(u.finish_reason);
    record_.prompt_tokens = u.usage.prompt_tokens;
    record_.completion_tokens = u.usage.completion_tokens;
    record_.cached_prompt_tokens = u.usage.cached_prompt_tokens;
    record_.routed_computed = u.usage.routed_computed();
    record_.routed_skipped = u.usage.routed_skipped();
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
    auto h = svc_->Submit(ctx, req, MakeSink(link_), &request_id_);
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      record_.request_id = request_id_;
    }
    if (!h.ok()) return h.status();
    handle_ = *h;
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
  std::string request_id_;
  std::atomic<Scheduler::Handle> handle_{0};
  grpc::CallbackServerContext* ctx_ = nullptr;
  bool flush_posted_ = false;    // under link_->mu
  bool metadata_added_ = false;  // under link_->mu
  bool finish_called_ = false;   // under link_->mu
  Clock::time_point arrival_ = Clock::now();
  RequestRecord record_;         // under link_->mu (filled only with a request log)
};

// Unary Generate: collects every update into one response.
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

  void DeliverLocked(RequestUpdate u) override {
    if (finished_) return;
    NoteUpdateLocked(u);
    svc_->AppendUpdate(u, request_id_, &response_);
    if (!u.finished) return;
    finished_ = true;
    final_ = ToGrpcStatus(u.status);
    ScheduleFlushLocked();
  }

  void FlushLocked() override {
    flush_posted_ = false;
    AddInitialMetadataLocked(/*send_now=*/false);
    if (final_.ok()) *resp_ = Serialize(response_);
    FinishLocked(final_);
  }

 private:
  grpc::ByteBuffer* resp_;
  v1::GenerateResponse response_;  // under link_->mu
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

  void DeliverLocked(RequestUpdate u) override {
    if (final_known_) return;
    NoteUpdateLocked(u);
    if (u.finished) {
      final_known_ = true;
      final_ = ToGrpcStatus(u.status);
      if (!u.status.ok()) pending_.clear();  // failed: nothing more to send but the status
    }
    if (u.status.ok()) {
      // While a write is in flight, updates merge into the last queued
      // message: a slow reader gets fewer, larger messages, never a backlog.
      if (pending_.empty()) pending_.emplace_back();
      svc_->AppendUpdate(u, request_id_, &pending_.back());
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
      if (!final_known_ && handle_ != 0) svc_->Cancel(handle_);
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

StatusOr<Scheduler::Handle> GeneratorService::Submit(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer& bytes,
                                                     UpdateSink sink, std::string* request_id) {
  Scheduler* scheduler = scheduler_.load();
  if (Status auth = Authenticate(ctx); !auth.ok()) {
    if (scheduler != nullptr) metrics_->CountRejected(auth.code());
    return auth;
  }
  if (scheduler == nullptr) {
    return Unavailable("the model is still loading; retry shortly");
  }
  std::vector<grpc::Slice> slices;
  std::string wire;
  if (bytes.Dump(&slices).ok()) {
    for (const auto& sl : slices) wire.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  }
  auto request = DecodeGenerateRequest(wire);
  if (!request.ok()) {
    metrics_->CountRejected(request.status().code());
    return request.status();
  }
  // The client's id, when usable, names the call even if validation refuses it.
  if (request->has_request_id() && IsValidRequestId(request->request_id())) *request_id = request->request_id();
  const uint64_t n = next_id_.fetch_add(1);
  auto g = ValidateGenerateRequest(*request, model_->validation, seed_base_ + n * 0x9E3779B97F4A7C15ull,
                                   "req-" + std::to_string(n));
  if (!g.ok()) {
    metrics_->CountRejected(g.status().code());
    return g.status();
  }
  *request_id = g->request_id;
  const auto deadline = ctx->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    g->deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - std::chrono::system_clock::now());
  }
  auto h = scheduler->Submit(std::move(*g), std::move(sink));
  if (!h.ok()) metrics_->CountRejected(h.status().code());
  return h;
}

void GeneratorService::Cancel(Scheduler::Handle h) {
  Scheduler* scheduler = scheduler_.load();
  if (scheduler != nullptr) scheduler->Cancel(h);
}

void GeneratorService::AppendUpdate(const RequestUpdate& u, const std::string& request_id,
                                    v1::GenerateResponse* out) const {
  out->set_request_id(request_id);
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
  if (Status auth = Authenticate(ctx); !auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
  } else if (scheduler_.load() == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading; retry shortly"));
  } else {
    *response = model_->info;
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

}  // namespace modserve
