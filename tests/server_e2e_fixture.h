// The fixture the mod-server end-to-end tests over one shared server use:
// a ServerApp on the shipped model (started once per test program), a stub
// on a loopback channel per test, unary and streaming helpers, the scraped
// metrics, and waiting for the server to go idle.
//
// Thread-safety: a test's helpers run on the test's thread; the shared
// server is safe for concurrent calls.
#pragma once

#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "grpc_test_util.h"
#include "metrics_scrape.h"
#include "modserve/v1/modserve.grpc.pb.h"
#include "server/server_app.h"
#include "server_e2e_util.h"

namespace modserve::testing {

struct StreamResult {
  grpc::Status status;
  std::vector<v1::GenerateResponse> messages;
  std::string text;
  std::vector<int> ids;
};

class ServerE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { app_ = StartApp(TestConfig()).release(); }
  static void TearDownTestSuite() {
    delete app_;
    app_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(app_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(app_->grpc_port()), grpc::InsecureChannelCredentials());
    stub_ = v1::Generator::NewStub(channel_);
  }

  grpc::Status Unary(const v1::GenerateRequest& r, v1::GenerateResponse* out, double timeout = 60) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(timeout));
    return stub_->Generate(&ctx, r, out);
  }

  StreamResult Stream(const v1::GenerateRequest& r, double timeout = 60) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(timeout));
    auto reader = stub_->GenerateStream(&ctx, r);
    StreamResult s;
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
      s.text += m.text();
      for (int id : m.token_ids()) s.ids.push_back(id);
      s.messages.push_back(m);
    }
    s.status = reader->Finish();
    return s;
  }

  std::map<std::string, double> Metrics() { return Scrape(app_->metrics_port()); }
  double Cancelled() { return Metrics()["modserve_requests_total{code=\"CANCELLED\",finish_reason=\"none\"}"]; }
  double DeadlineExceeded() { return Metrics()["modserve_requests_total{code=\"DEADLINE_EXCEEDED\",finish_reason=\"none\"}"]; }

  // Streams `r`, cancels after `messages` messages and returns the call's
  // final code (-1 cast to a code if the stream ended before that many).
  grpc::StatusCode CancelStreamAfter(const v1::GenerateRequest& r, int messages) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    auto reader = stub_->GenerateStream(&ctx, r);
    v1::GenerateResponse m;
    int got = 0;
    while (got < messages && reader->Read(&m)) ++got;
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    const grpc::StatusCode code = reader->Finish().error_code();
    return got == messages ? code : static_cast<grpc::StatusCode>(-1);
  }

  // Waits until the server holds no request and no KV block.
  bool WaitIdle(double seconds = 5) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < until) {
      auto m = Metrics();
      if (m["modserve_running_requests"] == 0 && m["modserve_queue_requests"] == 0 && m["modserve_kv_cache_usage_ratio"] == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  static inline ServerApp* app_ = nullptr;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generator::Stub> stub_;
};


}  // namespace modserve::testing
