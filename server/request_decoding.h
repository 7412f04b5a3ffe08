// Request decoding: the bytes of a GenerateRequest (or TokenizeRequest) as
// they came off the wire into the message, with an INVALID_ARGUMENT that
// says what is wrong when they do not parse: a string field that is not
// valid UTF-8 (named, with the offset of the first bad byte), or bytes that
// are not such a message at all. (Letting gRPC parse would answer such
// requests with a bare error and no message.)
//
// Thread-safety: pure functions.
#pragma once

#include <string_view>

#include "engine/status.h"
#include "modserve/v1/modserve.pb.h"

namespace modserve {

StatusOr<v1::GenerateRequest> DecodeGenerateRequest(std::string_view wire);
StatusOr<v1::TokenizeRequest> DecodeTokenizeRequest(std::string_view wire);

}  // namespace modserve
