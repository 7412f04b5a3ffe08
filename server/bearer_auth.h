// BearerAuth: optional bearer-token authentication of gRPC calls. When a
// token is configured (auth_token_file), a call must carry the metadata
// "authorization: Bearer <token>"; otherwise it is refused with
// UNAUTHENTICATED. The token is compared in constant time and never appears
// in an error message or a log line.
//
// Health checks and server reflection stay open (Kubernetes probes cannot
// send metadata); the service checks Generate, GenerateStream and
// GetModelInfo.
//
// Thread-safety: immutable after construction; Check may run on any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "engine/status.h"

namespace modserve {

class BearerAuth {
 public:
  // No token: every call is allowed.
  BearerAuth() = default;
  // Reads the token from `path` (surrounding whitespace trimmed). Errors name
  // the key and the file, never the contents: unreadable, empty, shorter than
  // 16 characters, or characters that cannot travel in an HTTP/2 header.
  static StatusOr<BearerAuth> FromFile(const std::string& path);
  static StatusOr<BearerAuth> FromToken(std::string token, const std::string& source);

  bool enabled() const { return !token_.empty(); }
  // `authorization` is the call's "authorization" metadata value, if any.
  Status Check(std::optional<std::string_view> authorization) const;

 private:
  std::string token_;
};

}  // namespace modserve
