// The whole server (gRPC reactors, scheduler, metrics, drain) over loopback
// with a fake engine instead of the model: torch-free, so it builds fast
// under AddressSanitizer and ThreadSanitizer. It hammers the parts where
// lifetimes and threads meet: many concurrent streams, cancellations at
// random moments, expiring deadlines, unary calls, and a drain with requests
// in flight; at the end nothing is left running and no KV block is in use.
// And stream messages merged while a write is in flight keep their logprobs.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <future>
#include <random>
#include <thread>

#include "fake_engine.h"
#include "fake_server.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "metrics_scrape.h"
#include "scheduler_test_util.h"
#include "modserve/v1/modserve.grpc.pb.h"
#include "server/server_app.h"

namespace modserve {
namespace {

using testing::Expected;
using testing::FakeEngine;
using testing::Scrape;

using testing::FakeServer;
using testing::In;

FakeServer StartFake(int64_t kv_blocks, std::chrono::microseconds step_delay) {
  return testing::StartFake(testing::LoopbackConfig(), kv_blocks, step_delay);
}

TEST(ServerWithFakeEngine, ConcurrentStreamsCancelsAndDeadlinesLeaveNothingBehind) {
  // A pool small enough that requests preempt each other too.
  FakeServer s = StartFake(/*kv_blocks=*/200, std::chrono::microseconds(300));
  ASSERT_NE(s.app, nullptr);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(s.app->grpc_port()), grpc::InsecureChannelCredentials());
  auto stub = v1::Generator::NewStub(channel);
  const int kThreads = 12, kPerThread = 15;
  std::atomic<int> ok{0}, cancelled{0}, expired{0}, other{0};
  std::atomic<int> reached{0};  // requests the server certainly saw (a response or a message arrived)
  std::atomic<int> completions{0};  // asked for in all (a third of the calls ask for n = 2 or 3)
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      for (int i = 0; i < kPerThread; ++i) {
        v1::GenerateRequest r;
        r.set_prompt("request " + std::to_string(t) + "/" + std::to_string(i));
        r.set_max_tokens(40);
        r.set_n(i % 3 == 0 ? 2 + static_cast<int>(rng() % 2) : 1);
        completions += std::max(1, r.n());
        grpc::ClientContext ctx;
        const int kind = static_cast<int>(rng() % 10);
        ctx.set_deadline(In(kind == 0 ? 0.005 : 30));  // 10% expire
        grpc::Status st;
        bool got_message = false;
        if (kind == 1) {  // unary
          v1::GenerateResponse u;
          st = stub->Generate(&ctx, r, &u);
        } else {
          auto reader = stub->GenerateStream(&ctx, r);
          v1::GenerateResponse m;
          const int cancel_after = kind <= 4 ? static_cast<int>(rng() % 5) : -1;  // 30% cancelled at a random point
          for (int n = 0; reader->Read(&m); ++n) {
            got_message = true;
            if (n == cancel_after) ctx.TryCancel();
          }
          st = reader->Finish();
        }
        if (st.ok() || got_message) ++reached;
        switch (st.error_code()) {
          case grpc::StatusCode::OK: ++ok; break;
          case grpc::StatusCode::CANCELLED: ++cancelled; break;
          case grpc::StatusCode::DEADLINE_EXCEEDED: ++expired; break;
          default: ++other; ADD_FAILURE() << st.error_message();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok + cancelled + expired + other, kThreads * kPerThread);
  EXPECT_GT(ok, 0);
  EXPECT_GT(cancelled, 0);
  EXPECT_EQ(other, 0);
  // Within a few steps, nothing runs and no block is held.
  std::map<std::string, double> m;
  for (int i = 0; i < 200; ++i) {
    m = Scrape(s.app->metrics_port());
    if (m["modserve_running_requests"] == 0 && m["modserve_queue_requests"] == 0 && m["modserve_kv_cache_usage_ratio"] == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(m["modserve_running_requests"], 0);
  EXPECT_EQ(m["modserve_kv_cache_usage_ratio"], 0);
  double ended = 0;
  for (const auto& [name, value] : m) {
    if (name.rfind("modserve_requests_total{", 0) == 0) ended += value;
  }
  // Every request the server saw is counted once, however it ended (a call
  // whose deadline passed before it reached the server is never seen).
  EXPECT_GE(ended, reached);
  EXPECT_LE(ended, completions) << "each completion of a call counts as a request";
  s.app->Drain(std::chrono::seconds(1));
  EXPECT_EQ(s.engine->sequences(), 0);
}

TEST(ServerWithFakeEngine, DrainFinishesInFlightStreamsAndRefusesNewOnes) {
  FakeServer s = StartFake(1000, std::chrono::microseconds(2000));
  ASSERT_NE(s.app, nullptr);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(s.app->grpc_port()), grpc::InsecureChannelCredentials());
  auto stub = v1::Generator::NewStub(channel);
  std::vector<std::thread> clients;
  std::atomic<int> completed{0};
  std::atomic<int> started{0};
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] {
      v1::GenerateRequest r;
      r.set_prompt("drain me");
      r.set_max_tokens(100);
      grpc::ClientContext ctx;
      ctx.set_deadline(In(30));
      auto reader = stub->GenerateStream(&ctx, r);
      v1::GenerateResponse m;
      int tokens = 0;
      while (reader->Read(&m)) {
        if (tokens == 0) ++started;
        tokens += m.token_ids_size();
      }
      if (reader->Finish().ok() && tokens == 100) ++completed;
    });
  }
  while (started < 4) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  s.app->BeginDrain();
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(5));
    v1::GenerateRequest r;
    r.set_prompt("late");
    v1::GenerateResponse u;
    EXPECT_EQ(stub->Generate(&ctx, r, &u).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  s.app->FinishDrain(std::chrono::seconds(20));
  for (auto& c : clients) c.join();
  EXPECT_EQ(completed, 4);
  EXPECT_EQ(s.engine->sequences(), 0);
}

TEST(ServerWithFakeEngine, DrainGraceOverEndsTheRestWithUnavailable) {
  FakeServer s = StartFake(1000, std::chrono::microseconds(5000));
  ASSERT_NE(s.app, nullptr);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(s.app->grpc_port()), grpc::InsecureChannelCredentials());
  auto stub = v1::Generator::NewStub(channel);
  grpc::Status status;
  std::atomic<bool> streaming{false};
  std::thread client([&] {
    v1::GenerateRequest r;
    r.set_prompt("too long to finish");
    r.set_max_tokens(200);  // 200 steps of 5 ms: longer than the grace
    grpc::ClientContext ctx;
    ctx.set_deadline(In(30));
    auto reader = stub->GenerateStream(&ctx, r);
    v1::GenerateResponse m;
    while (reader->Read(&m)) streaming = true;
    status = reader->Finish();
  });
  while (!streaming) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  s.app->Drain(std::chrono::milliseconds(100));
  client.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_NE(status.error_message().find("drain grace period"), std::string::npos);
  EXPECT_EQ(s.engine->sequences(), 0);
}

TEST(ServerWithFakeEngine, AcceptedStreamsGetTheirRequestIdBeforeTheFirstToken) {
  FakeServer s = StartFake(1000, std::chrono::microseconds(500000));  // a step (and so the first token) takes 0.5 s
  ASSERT_NE(s.app, nullptr);
  auto stub = v1::Generator::NewStub(grpc::CreateChannel(s.address(), grpc::InsecureChannelCredentials()));
  for (const char* id : {"my-id-1", ""}) {
    v1::GenerateRequest r;
    r.set_prompt("metadata");
    r.set_max_tokens(1);
    if (*id != '\0') r.set_request_id(id);
    grpc::ClientContext ctx;
    ctx.set_deadline(In(30));
    auto reader = stub->GenerateStream(&ctx, r);
    const auto t0 = std::chrono::steady_clock::now();
    reader->WaitForInitialMetadata();
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto& md = ctx.GetServerInitialMetadata();
    const auto it = md.find("x-request-id");
    ASSERT_NE(it, md.end());
    const std::string got(it->second.data(), it->second.size());
    v1::GenerateResponse m;
    ASSERT_TRUE(reader->Read(&m));
    EXPECT_EQ(got, m.request_id());
    if (*id != '\0') {
      EXPECT_EQ(got, id);
    }
    EXPECT_LT(waited, 0.4);  // long before the first step has produced a token
    while (reader->Read(&m)) {
    }
    EXPECT_TRUE(reader->Finish().ok());
  }
}

// Steps far faster than a write: tokens that arrive while a write is in
// flight are merged into the next message, and each merged message still
// carries one logprob per token id, in order.
TEST(ServerWithFakeEngine, MergedStreamMessagesKeepOneLogprobPerToken) {
  FakeServer s = StartFake(1000, std::chrono::microseconds(0));
  ASSERT_NE(s.app, nullptr);
  auto stub = v1::Generator::NewStub(grpc::CreateChannel(s.address(), grpc::InsecureChannelCredentials()));
  constexpr int kTokens = 200;
  for (const int n : {1, 3}) {  // n = 3: each step updates completions 0, 1, 2 in turn
    SCOPED_TRACE(n);
    v1::GenerateRequest r;
    r.set_prompt("merge");
    r.set_max_tokens(kTokens);
    r.set_return_logprobs(true);
    r.set_top_logprobs(1);
    r.set_n(n);
    grpc::ClientContext ctx;
    ctx.set_deadline(In(30));
    auto reader = stub->GenerateStream(&ctx, r);
    v1::GenerateResponse m;
    int messages = 0;
    std::vector<std::string> texts(static_cast<size_t>(n));
    while (reader->Read(&m)) {
      ++messages;
      ASSERT_EQ(m.logprobs_size(), m.token_ids_size()) << "message " << messages;
      ASSERT_LT(m.index(), n);
      for (int i = 0; i < m.token_ids_size(); ++i) {
        EXPECT_EQ(m.logprobs(i).token().token_id(), m.token_ids(i));
        ASSERT_EQ(m.logprobs(i).top_size(), 1);
        EXPECT_EQ(m.logprobs(i).top(0).token_id(), m.token_ids(i));  // the fake engine's one likely token
      }
      texts[static_cast<size_t>(m.index())] += m.text();
    }
    ASSERT_TRUE(reader->Finish().ok());
    std::printf("n = %d: %d tokens each in %d stream messages\n", n, kTokens, messages);
    for (const std::string& t : texts) EXPECT_EQ(t, Expected("abcdefghij", 6, kTokens)) << "in order, nothing lost";
    EXPECT_LT(messages, n * kTokens) << "no update was merged: the test did not reach the merging path";
  }
}

// A completion that fails (here: the engine fails the step that runs only the
// first completion, while the others wait to share its prompt) fails the
// call with its status, and the other completions are stopped, not run on
// for nobody.
TEST(ServerWithFakeEngine, OneFailedCompletionFailsTheCallAndStopsTheOthers) {
  Status started;
  FakeServer s = testing::StartFake(testing::LoopbackConfig(), 1000, std::chrono::microseconds(0), &started, [](FakeEngine* e) {
    e->prefix_hit = 8;  // prefix caching: completions 1 and 2 wait for completion 0 to read the prompt
    e->fail_steps = 1;
  });
  ASSERT_NE(s.app, nullptr) << started.ToString();
  auto stub = v1::Generator::NewStub(grpc::CreateChannel(s.address(), grpc::InsecureChannelCredentials()));
  for (const bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "stream" : "unary");
    v1::GenerateRequest r;
    r.set_prompt("a prompt of more than one block");
    r.set_max_tokens(50);
    r.set_n(3);
    grpc::ClientContext ctx;
    ctx.set_deadline(In(30));
    grpc::Status st;
    if (stream) {
      auto reader = stub->GenerateStream(&ctx, r);
      for (v1::GenerateResponse m; reader->Read(&m);) {
      }
      st = reader->Finish();
    } else {
      v1::GenerateResponse u;
      st = stub->Generate(&ctx, r, &u);
    }
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INTERNAL) << st.error_message();
    EXPECT_NE(st.error_message().find("fake engine failure"), std::string::npos);
    std::map<std::string, double> m;
    const std::string cancelled = "modserve_requests_total{code=\"CANCELLED\",finish_reason=\"none\"}";
    for (int i = 0; i < 200; ++i) {
      m = Scrape(s.app->metrics_port());
      if (m["modserve_running_requests"] == 0 && m["modserve_queue_requests"] == 0 && m[cancelled] >= (stream ? 4 : 2)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(m[cancelled], stream ? 4 : 2) << "the two other completions were stopped";
    EXPECT_EQ(m["modserve_requests_total{code=\"OK\",finish_reason=\"length\"}"], 0) << "and not run to the end";
    s.engine->fail_steps = 1;  // for the next call (no step runs in between: the server is idle)
  }
}

// A port that was free a moment ago (for a server that must be reached before Start returns).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(ServerWithFakeEngine, NotServingWhileTheEngineLoads) {
  ServerConfig cfg;
  const int port = FreePort();
  cfg.listen = "127.0.0.1:" + std::to_string(port);
  cfg.metrics_listen = "127.0.0.1:0";
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::unique_ptr<ServerApp> app;
  std::thread starter([&] {
    auto started = ServerApp::Start(cfg, [&](const ServerConfig&) -> StatusOr<LoadedEngine> {
      released.wait();  // the "model" takes until the test says so to load
      LoadedEngine loaded;
      loaded.engine = std::make_unique<FakeEngine>(100, 4);
      loaded.model.n_layers = 3;
      loaded.model.routed_layers = {1};
      return loaded;
    });
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    app = std::move(*started);
  });
  auto channel = grpc::CreateChannel(cfg.listen, grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto check = [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(5));
    ctx.set_wait_for_ready(true);  // the server may not be listening yet
    grpc::health::v1::HealthCheckResponse r;
    return health->Check(&ctx, {}, &r).ok() ? r.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
  };
  EXPECT_EQ(check(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  {
    auto stub = v1::Generator::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(In(5));
    v1::GenerateRequest r;
    r.set_prompt("too early");
    v1::GenerateResponse u;
    grpc::Status st = stub->Generate(&ctx, r, &u);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(st.error_message().find("loading"), std::string::npos);
  }
  release.set_value();
  starter.join();
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(check(), grpc::health::v1::HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace modserve
