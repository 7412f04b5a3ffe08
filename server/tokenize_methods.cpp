// GeneratorService's Tokenize and Detokenize methods: answered at once on
// gRPC's thread (no model step, nothing queued), see tokenization.h; each
// call is counted in modserve_tokenization_requests_total and, with a request
// log, written there.
#include <chrono>

#include "proto/grpc_code_name.h"
#include "server/generator_service.h"
#include "server/grpc_status.h"
#include "server/request_decoding.h"
#include "server/tokenization.h"
#include "server/wire_bytes.h"

namespace modserve {
namespace {

using Clock = std::chrono::steady_clock;

// Ends `reactor`'s call `rpc` (which arrived at `arrival`) with `s`: counts
// it (once the metrics are attached), and logs it (`prompt_tokens` >= 0: the
// text's token count).
void FinishCall(const GeneratorService* svc, grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor,
                const char* rpc, Clock::time_point arrival, const Status& s, int64_t prompt_tokens) {
  const grpc::Status status = ToGrpcStatus(s);
  if (ServerMetrics* metrics = svc->attached_metrics()) metrics->CountTokenization(rpc, s.code());
  if (svc->request_log() != nullptr) {
    RequestRecord record;
    record.rpc = rpc;
    record.peer = ctx->peer();
    record.code = GrpcCodeName(status.error_code());
    record.message = status.error_message();
    if (s.ok()) record.prompt_tokens = prompt_tokens;
    record.duration_seconds = std::chrono::duration<double>(Clock::now() - arrival).count();
    svc->request_log()->Write(FormatRequestRecord(record, std::chrono::system_clock::now()));
  }
  reactor->Finish(status);
}

}  // namespace

grpc::ServerUnaryReactor* GeneratorService::Tokenize(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  const Clock::time_point arrival = Clock::now();
  int64_t prompt_tokens = -1;
  const Status s = [&]() -> Status {
    MODSERVE_RETURN_IF_ERROR(CheckReady(ctx));
    auto r = DecodeTokenizeRequest(WireBytes(*request));
    if (!r.ok()) return r.status();
    auto out = modserve::Tokenize(*r, model().validation);
    if (!out.ok()) return out.status();
    prompt_tokens = out->prompt_tokens();
    grpc::Slice slice(out->SerializeAsString());
    *response = grpc::ByteBuffer(&slice, 1);
    return Status::Ok();
  }();
  auto* reactor = ctx->DefaultReactor();
  FinishCall(this, ctx, reactor, "Tokenize", arrival, s, prompt_tokens);
  return reactor;
}

grpc::ServerUnaryReactor* GeneratorService::Detokenize(grpc::CallbackServerContext* ctx, const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  const Clock::time_point arrival = Clock::now();
  const Status s = [&]() -> Status {
    MODSERVE_RETURN_IF_ERROR(CheckReady(ctx));
    auto out = modserve::Detokenize(*request, model().validation);
    if (!out.ok()) return out.status();
    *response = std::move(*out);
    return Status::Ok();
  }();
  auto* reactor = ctx->DefaultReactor();
  FinishCall(this, ctx, reactor, "Detokenize", arrival, s, -1);
  return reactor;
}

}  // namespace modserve
