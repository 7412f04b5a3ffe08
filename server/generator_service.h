// GeneratorService: the modserve.v1.Generator gRPC service on the callback
// API. One reactor per RPC: it validates the request, submits it to the
// scheduler, and turns the scheduler's updates into responses with one write
// in flight at a time; a client cancel or an expired deadline tells the
// scheduler, which frees the request's KV blocks within one step. Reactions
// never block: updates are queued under a per-RPC mutex, and the gRPC calls
// (StartWrite, Finish) are made on a write-dispatcher thread, not on the
// scheduler's step thread.
//
// Until Attach() is called (the model is loading) every method answers
// UNAVAILABLE. Tokenize and Detokenize (tokenization.h) are answered on
// gRPC's thread, without the scheduler. With a bearer token set (SetAuth),
// every method first checks the call's "authorization" metadata. Every
// accepted call gets its request id as initial metadata ("x-request-id")
// before its first token. With a request log (SetRequestLog), every ended
// Generate / GenerateStream call, accepted or refused, writes one line.
//
// Thread-safety: all methods are called by gRPC's threads and the scheduler's
// step thread; shared state is atomic or under per-RPC mutexes.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "modserve/v1/modserve.grpc.pb.h"
#include "server/bearer_auth.h"
#include "server/metrics.h"
#include "server/request_log.h"
#include "server/request_validation.h"
#include "server/scheduler.h"
#include "server/write_dispatcher.h"

namespace modserve {

// What the service knows of the served model once it is loaded.
struct ServedModel {
  ValidationContext validation;
  std::vector<int64_t> routed_layers;  // bit i of a route = routed_layers[i]
  v1::ModelInfo info;
};

// Generate, GenerateStream and Tokenize take the request's raw bytes (and
// send serialized responses), so that a request gRPC could not parse gets an
// INVALID_ARGUMENT naming the problem (request_decoding.h).
using GeneratorServiceBase = v1::Generator::WithRawCallbackMethod_Generate<v1::Generator::WithRawCallbackMethod_GenerateStream<
    v1::Generator::WithCallbackMethod_GetModelInfo<v1::Generator::WithRawCallbackMethod_Tokenize<
        v1::Generator::WithCallbackMethod_Detokenize<v1::Generator::Service>>>>>;

class GeneratorService final : public GeneratorServiceBase {
 public:
  // Call before the gRPC server starts.
  void SetAuth(BearerAuth auth) { auth_ = std::move(auth); }
  // Call before the gRPC server starts; `log` (may be null: no request log)
  // must outlive every RPC. Each ended Generate call writes a line to it.
  void SetRequestLog(RequestLog* log) { request_log_ = log; }
  RequestLog* request_log() const { return request_log_; }
  // Starts serving Generate with `scheduler` and `metrics` (which must
  // outlive every RPC).
  void Attach(Scheduler* scheduler, ServedModel model, ServerMetrics* metrics);

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateStream(grpc::CallbackServerContext* ctx,
                                                             const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx, const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;

  // UNAUTHENTICATED unless the call carries the bearer token (when one is set).
  Status Authenticate(const grpc::CallbackServerContext* ctx) const;
  // Authenticate's answer, else UNAVAILABLE while the model loads, else OK
  // (and model() may be read).
  Status CheckReady(const grpc::CallbackServerContext* ctx) const;
  const ServedModel& model() const { return *model_; }
  // The metrics once Attach has run (the scheduler is set), else null.
  ServerMetrics* attached_metrics() const { return scheduler_.load() != nullptr ? metrics_ : nullptr; }
  // A call's request, validated: its id and its n completions (completion i
  // samples with seed + i; only completion 0 scores the prompt).
  struct Submission {
    std::string request_id;  // known even when Prepare fails, if the request named a valid one
    std::vector<GenerationRequest> requests;
    std::string guide;  // the request's guide kind for the log: "regex", "choice", "json" or ""
  };
  // For reactors: authenticates, decodes and validates the call's request into `sub`.
  Status Prepare(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer& request, Submission* sub);
  // Queues a prepared request's completions, all or none, one sink each
  // (updates may arrive on the step thread before this returns).
  StatusOr<std::vector<Scheduler::Handle>> Enqueue(std::vector<GenerationRequest> requests, std::vector<UpdateSink> sinks);
  void Cancel(Scheduler::Handle h);
  // Runs `task` on the write dispatcher's thread (gRPC writes leave the step thread).
  void PostWrite(std::function<void()> task) { writes_.Post(std::move(task)); }
  // Appends an update of completion `index` to `out` (text, ids, routes,
  // logprobs; on its last one finish reason and usage).
  void AppendUpdate(const RequestUpdate& u, const std::string& request_id, int index, v1::GenerateResponse* out) const;

  // Generate and GenerateStream calls whose reactor has not reached OnDone
  // (their status not yet sent). The drain waits for none to be left before
  // it closes the server's connections.
  void ReactorStarted();
  void ReactorDone();
  // Waits until no reactor is active or `deadline` passes; true if none is.
  bool WaitForReactors(std::chrono::steady_clock::time_point deadline);

 private:
  ServerMetrics* metrics_ = nullptr;  // set by Attach, before scheduler_
  std::atomic<Scheduler*> scheduler_{nullptr};
  std::shared_ptr<const ServedModel> model_;  // set once by Attach, before scheduler_
  std::atomic<uint64_t> next_id_{1};
  uint64_t seed_base_ = 0;
  BearerAuth auth_;
  RequestLog* request_log_ = nullptr;
  std::mutex reactors_mu_;
  std::condition_variable reactors_cv_;
  int64_t active_reactors_ = 0;  // under reactors_mu_
  WriteDispatcher writes_;
};

}  // namespace modserve
