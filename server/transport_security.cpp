#include "server/transport_security.h"

#include <grpcpp/security/server_credentials.h>

#include "engine/secret_file.h"

namespace modserve {
namespace {

// Reads a PEM file named by config key `key`; it must hold a block whose
// BEGIN line contains `kind` ("CERTIFICATE", "PRIVATE KEY").
StatusOr<std::string> ReadPem(const std::string& key, const std::string& path, const std::string& kind) {
  auto read = ReadSecretFile(key, path);
  if (!read.ok()) return read.status();
  const std::string& pem = *read;
  const auto begin = pem.find("-----BEGIN ");
  const auto line_end = begin == std::string::npos ? std::string::npos : pem.find("-----", begin + 11);
  if (line_end == std::string::npos || pem.substr(begin, line_end - begin).find(kind) == std::string::npos) {
    return InvalidArgument(key + ": " + path + " holds no PEM " + kind);
  }
  return pem;
}

}  // namespace

StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerConfig& cfg) {
  if (!cfg.tls()) return grpc::InsecureServerCredentials();
  auto cert = ReadPem("tls_cert_file", cfg.tls_cert_file, "CERTIFICATE");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem("tls_key_file", cfg.tls_key_file, "PRIVATE KEY");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions opts;
  opts.pem_key_cert_pairs.push_back({*key, *cert});
  if (!cfg.tls_client_ca_file.empty()) {
    auto ca = ReadPem("tls_client_ca_file", cfg.tls_client_ca_file, "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    opts.pem_root_certs = *ca;
    opts.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(opts);
}

}  // namespace modserve
