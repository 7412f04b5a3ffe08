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

// Parses `wire` as the message `m` (or its wire twin), naming its type when
// the bytes do not parse.
Status Parse(std::string_view wire, google::protobuf::Message* m, const std::string& api_type) {
  if (m->ParseFromArray(wire.data(), static_cast<int>(wire.size()))) return Status::Ok();
  return InvalidArgument("the request is not a valid " + api_type + " message (" + std::to_string(wire.size()) +
                         " bytes that do not parse as protobuf)");
}

}  // namespace

StatusOr<v1::GenerateRequest> DecodeGenerateRequest(std::string_view wire) {
  const std::string type = v1::GenerateRequest::descriptor()->full_name();
  wire::GenerateRequestWire w;
  MODSERVE_RETURN_IF_ERROR(Parse(wire, &w, type));
  MODSERVE_RETURN_IF_ERROR(CheckUtf8("prompt", w.prompt()));
  for (int i = 0; i < w.stop_size(); ++i) MODSERVE_RETURN_IF_ERROR(CheckUtf8("stop[" + std::to_string(i) + "]", w.stop(i)));
  if (w.has_request_id()) MODSERVE_RETURN_IF_ERROR(CheckUtf8("request_id", w.request_id()));
  MODSERVE_RETURN_IF_ERROR(CheckUtf8("cache_salt", w.cache_salt()));
  MODSERVE_RETURN_IF_ERROR(CheckUtf8("guided_regex", w.guided_regex()));
  MODSERVE_RETURN_IF_ERROR(CheckUtf8("guided_json", w.guided_json()));
  for (int i = 0; i < w.guided_choice_size(); ++i) {
    MODSERVE_RETURN_IF_ERROR(CheckUtf8("guided_choice[" + std::to_string(i) + "]", w.guided_choice(i)));
  }
  v1::GenerateRequest r;
  MODSERVE_RETURN_IF_ERROR(Parse(wire, &r, type));
  return r;
}

StatusOr<v1::TokenizeRequest> DecodeTokenizeRequest(std::string_view wire) {
  const std::string type = v1::TokenizeRequest::descriptor()->full_name();
  wire::TokenizeRequestWire w;
  MODSERVE_RETURN_IF_ERROR(Parse(wire, &w, type));
  MODSERVE_RETURN_IF_ERROR(CheckUtf8("text", w.text()));
  v1::TokenizeRequest r;
  MODSERVE_RETURN_IF_ERROR(Parse(wire, &r, type));
  return r;
}

}  // namespace modserve
