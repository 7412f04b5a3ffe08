// Security and transport limits of the server, end to end over loopback with
// a fake engine (torch-free): TLS and mutual TLS from the config (certificates
// made by the openssl CLI at test time), bearer-token authentication
// (UNAUTHENTICATED without it; health stays open for probes), the message
// size and concurrent-streams-per-connection limits, and start-up errors for
// bad key, certificate and token files that name the key and the file but
// never a secret.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <thread>

#include "client/connection.h"
#include "fake_server.h"
#include "test_pki.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc_test_util.h"
#include "metrics_scrape.h"
#include "modserve/v1/modserve.grpc.pb.h"

namespace modserve {
namespace {

using testing::FakeServer;
using testing::In;
using testing::Request;
using testing::LoopbackConfig;
using testing::Scrape;

const char* kToken = "s3cr3t-t0ken-0123456789abcdef";

using testing::Certs;

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// One unary Generate over `conn`; returns its status.
grpc::Status Call(const ClientConnection& conn, const v1::GenerateRequest& r = Request("hello", 4)) {
  auto stub = v1::Generator::NewStub(conn.channel());
  grpc::ClientContext ctx;
  conn.Prepare(&ctx, 10);
  v1::GenerateResponse u;
  return stub->Generate(&ctx, r, &u);
}

ClientConnection Connect(const FakeServer& s, ConnectionOptions o = {}) {
  o.server = s.address();
  auto c = ClientConnection::Open(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return *c;
}

// A server with TLS (mutual when `client_ca`), on the test PKI.
FakeServer StartTls(bool client_ca) {
  ServerConfig cfg = LoopbackConfig();
  cfg.tls_cert_file = Certs()("server.pem");
  cfg.tls_key_file = Certs()("server.key");
  if (client_ca) cfg.tls_client_ca_file = Certs()("ca.pem");
  return testing::StartFake(cfg, 1000, std::chrono::microseconds(0));
}

// A client that trusts the test CA, without a certificate of its own.
ConnectionOptions TlsClient() {
  ConnectionOptions o;
  o.tls_ca_file = Certs()("ca.pem");
  o.tls_server_name = "localhost";
  return o;
}

TEST(Tls, OnlyTlsClientsThatTrustTheServerGetIn) {
  ASSERT_TRUE(Certs().ok()) << "openssl failed; see " << Certs()("openssl.log");
  FakeServer s = StartTls(/*client_ca=*/false);
  ASSERT_NE(s.app, nullptr);

  ConnectionOptions tls = TlsClient();
  EXPECT_TRUE(Call(Connect(s, tls)).ok());

  EXPECT_EQ(Call(Connect(s)).error_code(), grpc::StatusCode::UNAVAILABLE) << "a plaintext client";
  ConnectionOptions wrong_ca = tls;
  wrong_ca.tls_ca_file = Certs()("rogue.pem");
  EXPECT_EQ(Call(Connect(s, wrong_ca)).error_code(), grpc::StatusCode::UNAVAILABLE) << "a client that does not trust it";
}

TEST(Tls, MutualTlsNeedsAClientCertificateFromTheConfiguredCa) {
  ASSERT_TRUE(Certs().ok());
  FakeServer s = StartTls(/*client_ca=*/true);
  ASSERT_NE(s.app, nullptr);

  ConnectionOptions no_cert = TlsClient();
  EXPECT_EQ(Call(Connect(s, no_cert)).error_code(), grpc::StatusCode::UNAVAILABLE);
  ConnectionOptions rogue = no_cert;
  rogue.tls_cert_file = Certs()("rogue-client.pem");
  rogue.tls_key_file = Certs()("rogue-client.key");
  EXPECT_EQ(Call(Connect(s, rogue)).error_code(), grpc::StatusCode::UNAVAILABLE);
  ConnectionOptions good = no_cert;
  good.tls_cert_file = Certs()("client.pem");
  good.tls_key_file = Certs()("client.key");
  EXPECT_TRUE(Call(Connect(s, good)).ok());
}

TEST(BearerToken, CallsWithoutTheTokenAreUnauthenticatedAndHealthStaysOpen) {
  ServerConfig cfg = LoopbackConfig();
  cfg.auth_token_file = WriteFile("token", std::string(kToken) + "\n");
  FakeServer s = testing::StartFake(cfg, 1000, std::chrono::microseconds(0));
  ASSERT_NE(s.app, nullptr);
  auto channel = grpc::CreateChannel(s.address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Generator::NewStub(channel);

  auto check_refused = [&](const char* authorization) {
    SCOPED_TRACE(authorization == nullptr ? "no authorization" : authorization);
    auto prepare = [&](grpc::ClientContext* ctx) {
      ctx->set_deadline(In(10));
      if (authorization != nullptr) ctx->AddMetadata("authorization", authorization);
    };
    grpc::ClientContext c1, c2, c3, c4, c5;
    for (grpc::ClientContext* c : {&c1, &c2, &c3, &c4, &c5}) prepare(c);
    v1::GenerateResponse u;
    grpc::Status unary = stub->Generate(&c1, Request("hello", 4), &u);
    EXPECT_EQ(unary.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(unary.error_message().find(kToken), std::string::npos);
    auto reader = stub->GenerateStream(&c2, Request("hello", 4));
    v1::GenerateResponse m;
    EXPECT_FALSE(reader->Read(&m));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
    v1::ModelInfo info;
    EXPECT_EQ(stub->GetModelInfo(&c3, {}, &info).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    v1::TokenizeRequest tr;
    tr.set_text("hello");
    v1::TokenizeResponse tokens;
    EXPECT_EQ(stub->Tokenize(&c4, tr, &tokens).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    v1::DetokenizeResponse text;
    EXPECT_EQ(stub->Detokenize(&c5, {}, &text).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  };
  check_refused(nullptr);
  check_refused("Bearer not-the-token-at-all-00000");
  check_refused((std::string("Basic ") + kToken).c_str());
  check_refused((std::string("Bearer ") + kToken + "x").c_str());

  ConnectionOptions o;
  o.token_file = cfg.auth_token_file;
  EXPECT_TRUE(Call(Connect(s, o)).ok());

  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext hc;
  hc.set_deadline(In(10));
  grpc::health::v1::HealthCheckResponse hr;
  ASSERT_TRUE(health->Check(&hc, {}, &hr).ok());
  EXPECT_EQ(hr.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  auto m = Scrape(s.app->metrics_port());
  EXPECT_EQ(m["modserve_requests_total{code=\"UNAUTHENTICATED\",finish_reason=\"none\"}"], 8);  // 4 x (unary + stream)
}

TEST(StartUp, BadSecurityFilesStopTheServerNamingKeyAndFileButNoSecret) {
  ASSERT_TRUE(Certs().ok());
  const std::string short_token = WriteFile("short-token", "abc123");
  const std::string spaced_token = WriteFile("spaced-token", "abcdefgh ijklmnopqrstu");
  const std::string empty_token = WriteFile("empty-token", "\n\n");
  const std::string not_pem = WriteFile("not.pem", "this is not PEM\n");
  struct Case {
    std::function<void(ServerConfig*)> edit;
    std::vector<std::string> expect;  // substrings of the error
    std::string secret;               // must not appear in it
  } cases[] = {
      {[](auto* c) { c->auth_token_file = "/nonexistent/token"; }, {"auth_token_file", "/nonexistent/token"}, ""},
      {[&](auto* c) { c->auth_token_file = short_token; }, {"auth_token_file", short_token, "at least 16"}, "abc123"},
      {[&](auto* c) { c->auth_token_file = spaced_token; }, {"auth_token_file", "printable ASCII"}, "ijklmnop"},
      {[&](auto* c) { c->auth_token_file = empty_token; }, {"auth_token_file", "no token"}, ""},
      {[](auto* c) { c->tls_cert_file = "/nonexistent/cert.pem"; c->tls_key_file = Certs()("server.key"); },
       {"tls_cert_file", "/nonexistent/cert.pem"}, ""},
      {[&](auto* c) { c->tls_cert_file = Certs()("server.pem"); c->tls_key_file = not_pem; },
       {"tls_key_file", not_pem, "no PEM PRIVATE KEY"}, ""},
      {[&](auto* c) { c->tls_cert_file = Certs()("server.key"); c->tls_key_file = Certs()("server.key"); },
       {"tls_cert_file", "no PEM CERTIFICATE"}, ""},
      {[](auto* c) { c->tls_cert_file = Certs()("server.pem"); }, {"tls_cert_file and tls_key_file must be set together"}, ""},
      {[](auto* c) { c->tls_client_ca_file = Certs()("ca.pem"); }, {"tls_client_ca_file", "needs TLS"}, ""},
      {[](auto* c) { c->max_message_bytes = 4096; }, {"max_message_bytes (4096) is too small", "258 token ids", "at least 37320"}, ""},
      {[](auto* c) { c->max_concurrent_streams = 0; }, {"max_concurrent_streams must be in [1"}, ""},
  };
  const std::string key_text = Certs().Read("server.key");
  for (const auto& c : cases) {
    ServerConfig cfg = LoopbackConfig();
    c.edit(&cfg);
    Status st;
    FakeServer s = testing::StartFake(cfg, 100, std::chrono::microseconds(0), &st);
    EXPECT_EQ(s.app, nullptr);
    ASSERT_FALSE(st.ok());
    for (const auto& e : c.expect) EXPECT_NE(st.message().find(e), std::string::npos) << st.message();
    if (!c.secret.empty()) {
      EXPECT_EQ(st.message().find(c.secret), std::string::npos) << st.message();
    }
    EXPECT_EQ(st.message().find("PRIVATE KEY-----"), std::string::npos);
    EXPECT_EQ(st.message().find(key_text.substr(40, 40)), std::string::npos);
  }
}

TEST(Limits, AnOversizedMessageIsRefusedAndTheNextRequestIsServed) {
  ServerConfig cfg = LoopbackConfig();
  cfg.max_message_bytes = 38912;  // >= the largest valid request under the default limits, vocabulary 258 (37,320 bytes)
  FakeServer s = testing::StartFake(cfg, 1000, std::chrono::microseconds(0));
  ASSERT_NE(s.app, nullptr);
  ClientConnection conn = Connect(s);
  grpc::Status big = Call(conn, Request(std::string(40000, 'a'), 4));
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << big.error_message();
  EXPECT_TRUE(Call(conn).ok());
}

TEST(Limits, ConcurrentStreamsPerConnectionAreCapped) {
  ServerConfig cfg = LoopbackConfig();
  cfg.max_concurrent_streams = 2;
  FakeServer s = testing::StartFake(cfg, 1000, std::chrono::microseconds(3000));  // 40 tokens: ~120 ms a stream
  ASSERT_NE(s.app, nullptr);
  ClientConnection conn = Connect(s);  // one connection for every call
  auto stub = v1::Generator::NewStub(conn.channel());
  std::atomic<int> ok{0};
  std::atomic<bool> done{false};
  double most = 0;
  std::thread sampler([&] {
    while (!done) {
      auto m = Scrape(s.app->metrics_port());
      most = std::max(most, m["modserve_running_requests"] + m["modserve_queue_requests"]);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  std::vector<std::thread> clients;
  for (int i = 0; i < 5; ++i) {
    clients.emplace_back([&] {
      grpc::ClientContext ctx;
      conn.Prepare(&ctx, 30);
      auto reader = stub->GenerateStream(&ctx, Request("stream", 40));
      v1::GenerateResponse m;
      while (reader->Read(&m)) {
      }
      if (reader->Finish().ok()) ++ok;
    });
  }
  for (auto& c : clients) c.join();
  done = true;
  sampler.join();
  EXPECT_EQ(ok, 5);  // the others waited for a stream, none failed
  EXPECT_EQ(most, 2);
}

}  // namespace
}  // namespace modserve
