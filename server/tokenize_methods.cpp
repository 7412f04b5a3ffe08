// GeneratorService's Tokenize and Detokenize methods: answered at once on
// gRPC's thread (no model step, nothing queued), see tokenization.h.
#include "server/generator_service.h"
#include "server/grpc_status.h"
#include "server/request_decoding.h"
#include "server/tokenization.h"
#include "server/wire_bytes.h"

namespace modserve {

grpc::ServerUnaryReactor* GeneratorService::Tokenize(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus([&]() -> Status {
    MODSERVE_RETURN_IF_ERROR(CheckReady(ctx));
    auto r = DecodeTokenizeRequest(WireBytes(*request));
    if (!r.ok()) return r.status();
    auto out = modserve::Tokenize(*r, model().validation);
    if (!out.ok()) return out.status();
    grpc::Slice slice(out->SerializeAsString());
    *response = grpc::ByteBuffer(&slice, 1);
    return Status::Ok();
  }()));
  return reactor;
}

grpc::ServerUnaryReactor* GeneratorService::Detokenize(grpc::CallbackServerContext* ctx, const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus([&]() -> Status {
    MODSERVE_RETURN_IF_ERROR(CheckReady(ctx));
    auto out = modserve::Detokenize(*request, model().validation);
    if (!out.ok()) return out.status();
    *response = std::move(*out);
    return Status::Ok();
  }()));
  return reactor;
}

}  // namespace modserve
