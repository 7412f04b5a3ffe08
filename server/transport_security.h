// Transport security of the gRPC listener: plaintext, TLS, or mutual TLS,
// from the config's tls_* keys (README "Security").
//
// Thread-safety: a pure function; call at start-up.
#pragma once

#include <grpcpp/security/server_credentials.h>

#include <memory>

#include "engine/status.h"
#include "server/server_config.h"

namespace modserve {

// Reads the PEM files the config names and returns the listener's
// credentials. Errors name the key and the file (never their contents): a
// file that cannot be read, or that holds no PEM block of the expected kind.
StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerConfig& cfg);

}  // namespace modserve
