#include "client/connection.h"

#include "engine/secret_file.h"

namespace modserve {

StatusOr<ClientConnection> ClientConnection::Open(const ConnectionOptions& o) {
  if (o.server.empty()) return InvalidArgument("--server must be host:port");
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return InvalidArgument("--tls-cert and --tls-key must be given together (mutual TLS)");
  }
  if (!o.tls_cert_file.empty() && o.tls_ca_file.empty()) {
    return InvalidArgument("--tls-cert (mutual TLS) needs --tls-ca, the CA of the server's certificate");
  }
  if (!o.tls_server_name.empty() && o.tls_ca_file.empty()) {
    return InvalidArgument("--tls-server-name needs --tls-ca (without it the connection is plaintext)");
  }
  ClientConnection c;
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  if (!o.tls_ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    auto ca = ReadSecretFile("--tls-ca", o.tls_ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    if (!o.tls_cert_file.empty()) {
      auto cert = ReadSecretFile("--tls-cert", o.tls_cert_file);
      if (!cert.ok()) return cert.status();
      auto key = ReadSecretFile("--tls-key", o.tls_key_file);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    creds = grpc::SslCredentials(ssl);
    if (!o.tls_server_name.empty()) args.SetSslTargetNameOverride(o.tls_server_name);
  }
  if (!o.token_file.empty()) {
    auto token = ReadSecretFile("--token-file", o.token_file);
    if (!token.ok()) return token.status();
    const std::string_view t = TrimWhitespace(*token);
    if (t.empty()) return InvalidArgument("--token-file: " + o.token_file + " holds no token");
    c.authorization_ = "Bearer " + std::string(t);
  }
  c.server_ = o.server;
  c.creds_ = creds;
  c.args_ = args;
  c.channel_ = grpc::CreateCustomChannel(o.server, creds, args);
  return c;
}

std::shared_ptr<grpc::Channel> ClientConnection::NewChannel() const {
  grpc::ChannelArguments args = args_;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a TCP connection of its own, not the shared one
  return grpc::CreateCustomChannel(server_, creds_, args);
}

void ClientConnection::Prepare(grpc::ClientContext* ctx, double timeout_seconds) const {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                           std::chrono::duration<double>(timeout_seconds)));
  if (!authorization_.empty()) ctx->AddMetadata("authorization", authorization_);
}

}  // namespace modserve
