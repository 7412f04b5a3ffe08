#include "server/request_decoding.h"

#include "modserve/v1/request_wire.pb.h"
#include "server/utf8_stream.h"

namespace modserve {
namespace {

Status CheckUtf8(const std::string& field, const std::string& value) {
  if (IsValidUtf8(value)) return Status::Ok();
  return InvalidArgument(field + " is not valid UTF-8 (first bad byte at offset " +
                         std::to_string(ValidUtf8PrefixLength(value)) + ")");
}

}  // namespace

StatusOr<v1::GenerateRequest> DecodeGenerateRequest(std::string_view wire) {
  wire::GenerateRequestWire w;
  if (!w.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return InvalidArgument("the request is not a valid modserve.v1.GenerateRequest message (" +
                           std::to_string(wire.size()) + " bytes that do not parse as protobuf)");
  }
  MODSERVE_RETURN_IF_ERROR(CheckUtf8("prompt", w.prompt()));
  for (int i = 0; i < w.stop_size(); ++i) MODSERVE_RETURN_IF_ERROR(CheckUtf8("stop[" + std::to_string(i) + "]", w.stop(i)));
  if (w.has_request_id()) MODSERVE_RETURN_IF_ERROR(CheckUtf8("request_id", w.request_id()));
  MODSERVE_RETURN_IF_ERROR(CheckUtf8("cache_salt", w.cache_salt()));
  v1::GenerateRequest r;
  if (!r.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return InvalidArgument("the request is not a valid modserve.v1.GenerateRequest message");
  }
  return r;
}

}  // namespace modserve
