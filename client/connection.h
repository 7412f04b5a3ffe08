// ClientConnection: how mod-client and its load generator reach a server: a
// channel (plaintext, TLS, or mutual TLS with a client certificate) and the
// bearer token every call carries (README "Security").
//
// Thread-safety: immutable after Open; channel() and Prepare() may be called
// from any thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "engine/status.h"

namespace modserve {

struct ConnectionOptions {
  std::string server = "127.0.0.1:50051";
  std::string tls_ca_file;      // CA bundle (PEM) that signed the server's certificate: connect with TLS
  std::string tls_cert_file;    // client certificate (PEM) for mutual TLS ...
  std::string tls_key_file;     // ... and its private key
  std::string tls_server_name;  // name to check the server's certificate against (default: the host)
  std::string token_file;       // file holding the bearer token
};

class ClientConnection {
 public:
  // Reads the files; errors name the flag and the file, never their contents.
  static StatusOr<ClientConnection> Open(const ConnectionOptions& opts);

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  // Another channel to the same server with the same security, on a
  // connection of its own (a server caps the calls in flight on one HTTP/2
  // connection: max_concurrent_streams).
  std::shared_ptr<grpc::Channel> NewChannel() const;
  // Sets the call's deadline (`timeout_seconds` from now) and its authorization metadata.
  void Prepare(grpc::ClientContext* ctx, double timeout_seconds) const;

 private:
  std::string server_;
  std::shared_ptr<grpc::ChannelCredentials> creds_;
  grpc::ChannelArguments args_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string authorization_;  // "Bearer <token>", or empty
};

}  // namespace modserve
