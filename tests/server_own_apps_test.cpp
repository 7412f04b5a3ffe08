// End-to-end tests that each start a mod-server of their own (in process, or
// the mod-server binary): overload with a queue of 2, a MoDE checkpoint's
// expert counters, preemption under a tiny KV pool, priority preemption,
// SIGTERM drain of the real process, the request log, and a bad model path
// at start.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc_test_util.h"
#include "metrics_scrape.h"
#include "process.h"
#include "safetensors_bytes.h"
#include "modserve/v1/modserve.grpc.pb.h"
#include "engine/checkpoint.h"
#include "server/engine_loader.h"
#include "server_e2e_util.h"
#include "test_models.h"
#include "server/server_app.h"

namespace modserve {
namespace {

using grpc::health::v1::HealthCheckResponse;
using testing::In;
using testing::kModel;
using testing::Request;
using testing::Scrape;
using testing::StartApp;
using testing::TestConfig;

TEST(ServerOverload, FullQueueAnswersResourceExhaustedAndAcceptedRequestsComplete) {
  ServerConfig c = TestConfig();
  c.max_queue = 2;
  c.max_running = 1;
  auto app = StartApp(c);
  ASSERT_NE(app, nullptr);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(app->grpc_port()), grpc::InsecureChannelCredentials());
  auto stub = v1::Generator::NewStub(channel);
  const int kClients = 8;
  std::vector<grpc::Status> status(kClients);
  std::vector<double> seconds(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(In(60));
      v1::GenerateResponse u;
      const auto t0 = std::chrono::steady_clock::now();
      status[i] = stub->Generate(&ctx, Request("Overload " + std::to_string(i), 60), &u);
      seconds[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (status[i].ok()) {
        EXPECT_EQ(u.token_ids_size(), 60);
      }
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, exhausted = 0;
  double slowest_refusal = 0;
  for (int i = 0; i < kClients; ++i) {
    if (status[i].ok()) ++ok;
    if (status[i].error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++exhausted;
      slowest_refusal = std::max(slowest_refusal, seconds[i]);
      EXPECT_NE(status[i].error_message().find("queue is full"), std::string::npos);
    }
  }
  EXPECT_EQ(ok + exhausted, kClients);
  EXPECT_GE(ok, 1);
  EXPECT_GE(exhausted, 1);
  EXPECT_LT(slowest_refusal, 1.0);  // refused at once, not after waiting
  auto m = Scrape(app->metrics_port());
  EXPECT_EQ(m["modserve_requests_total{code=\"RESOURCE_EXHAUSTED\",finish_reason=\"none\"}"], exhausted);
  EXPECT_EQ(m["modserve_requests_total{code=\"OK\",finish_reason=\"length\"}"], ok);

  // A request's n completions are queued together, so n is capped at max_queue.
  grpc::ClientContext info_ctx;
  info_ctx.set_deadline(In(10));
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&info_ctx, {}, &info).ok());
  EXPECT_EQ(info.limits().max_n(), 2);
  grpc::ClientContext ctx;
  ctx.set_deadline(In(10));
  v1::GenerateRequest three = Request("Overload n", 4);
  three.set_n(3);
  v1::GenerateResponse u;
  const grpc::Status st = stub->Generate(&ctx, three, &u);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("n must be in [0, 2]"), std::string::npos) << st.error_message();
}

// A MoDE checkpoint (tiny, random weights) served end to end: the model
// info names the mode, per-expert counters add up to what the routed layers
// did, and in integrated mode the no-op counter is the layer's skips.
TEST(ServerMoDE, ExpertCountersMatchTheRoutedLayers) {
  for (const std::string mode : {"staged", "integrated"}) {
    SCOPED_TRACE(mode);
    ModelConfig mc = testing::TinyConfig();
    mc.max_context = 128;
    mc.mode = mode;
    mc.moe_experts = 3;
    mc.moe_top_k = mode == "staged" ? 2 : 1;
    torch::manual_seed(4);
    MoDTransformer model(mc);
    const std::string dir = testing::TempDir("server_mode_" + mode);
    ASSERT_TRUE(SaveCheckpoint(model, dir).ok());
    ServerConfig c = TestConfig();
    c.model = dir;
    auto app = StartApp(c);
    ASSERT_NE(app, nullptr);
    auto stub = v1::Generator::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(app->grpc_port()), grpc::InsecureChannelCredentials()));
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(In(30));
      v1::ModelInfo info;
      ASSERT_TRUE(stub->GetModelInfo(&ctx, {}, &info).ok());
      EXPECT_EQ(info.mode(), mode);
      EXPECT_EQ(info.experts(), 3);
      EXPECT_EQ(info.expert_top_k(), mc.moe_top_k);
    }
    v1::GenerateResponse u;
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    v1::GenerateRequest r = Request("Mixture of depths and experts", 30);
    r.set_return_routes(true);
    ASSERT_TRUE(stub->Generate(&ctx, r, &u).ok());
    auto m = Scrape(app->metrics_port());
    for (int layer : {1, 3}) {
      const std::string l = std::to_string(layer);
      double experts = 0;
      for (int e = 0; e < 3; ++e) experts += m["modserve_expert_tokens_total{expert=\"" + std::to_string(e) + "\",layer=\"" + l + "\"}"];
      const double computed = m["modserve_layer_tokens_total{decision=\"computed\",layer=\"" + l + "\"}"];
      const double skipped = m["modserve_layer_tokens_total{decision=\"skipped\",layer=\"" + l + "\"}"];
      EXPECT_EQ(computed + skipped, u.usage().prompt_tokens() + 29) << "layer " << layer;
      EXPECT_EQ(experts, computed * mc.moe_top_k) << "layer " << layer;
      const std::string noop = "modserve_expert_tokens_total{expert=\"noop\",layer=\"" + l + "\"}";
      if (mode == "integrated") {
        EXPECT_EQ(m[noop], skipped) << "layer " << layer;
      } else {
        EXPECT_EQ(m.count(noop), 0u);
      }
    }
  }
}

TEST(ServerMemoryPressure, PreemptedRequestsStillGetTheirSoloTokens) {
  ServerConfig c = TestConfig();
  c.kv_blocks = 60;  // one request of 121 tokens needs up to 6 layers x 8 blocks
  c.block_size = 16;
  auto app = StartApp(c);
  ASSERT_NE(app, nullptr);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(app->grpc_port()), grpc::InsecureChannelCredentials());
  auto stub = v1::Generator::NewStub(channel);
  auto generate = [&](int i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(120));
    v1::GenerateRequest r = Request("Request number " + std::to_string(i) + " says", 100);
    r.set_return_logprobs(true);
    v1::GenerateResponse u;
    grpc::Status st = stub->Generate(&ctx, r, &u);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return u;
  };
  const int kRequests = 6;
  std::vector<v1::GenerateResponse> solo(kRequests), together(kRequests);
  for (int i = 0; i < kRequests; ++i) solo[i] = generate(i);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) threads.emplace_back([&, i] { together[i] = generate(i); });
  for (auto& t : threads) t.join();
  for (int i = 0; i < kRequests; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(std::vector<int>(together[i].token_ids().begin(), together[i].token_ids().end()),
              std::vector<int>(solo[i].token_ids().begin(), solo[i].token_ids().end()));
    // One logprob per token, none lost or repeated by a preemption's recomputation.
    ASSERT_EQ(together[i].logprobs_size(), together[i].token_ids_size());
    ASSERT_EQ(solo[i].logprobs_size(), solo[i].token_ids_size());
    for (int t = 0; t < together[i].logprobs_size() && t < solo[i].logprobs_size(); ++t) {
      EXPECT_EQ(together[i].logprobs(t).token().token_id(), together[i].token_ids(t));
      EXPECT_NEAR(together[i].logprobs(t).token().logprob(), solo[i].logprobs(t).token().logprob(), 1e-3) << "token " << t;
    }
  }
  auto m = Scrape(app->metrics_port());
  EXPECT_GT(m["modserve_preemptions_total"], 0);  // the pool really was too small
  EXPECT_EQ(m["modserve_kv_cache_usage_ratio"], 0);
}

TEST(ServerPriority, AnUrgentRequestOvertakesRunningBackgroundOnesThatStillFinishExactly) {
  ServerConfig c = TestConfig();
  c.scheduling_policy = "priority";
  c.max_running = 2;
  auto app = StartApp(c);
  ASSERT_NE(app, nullptr);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(app->grpc_port()), grpc::InsecureChannelCredentials());
  auto stub = v1::Generator::NewStub(channel);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10));
    v1::ModelInfo info;
    ASSERT_TRUE(stub->GetModelInfo(&ctx, {}, &info).ok());
    EXPECT_EQ(info.scheduling_policy(), "priority");
  }
  auto background = [](int i) {
    v1::GenerateRequest r = Request("Background job " + std::to_string(i) + " reads", 200);
    r.set_ignore_eos(true);
    r.set_priority(5);
    return r;
  };
  // Two background streams fill max_running; each tells when it has a token and when it ends.
  std::vector<std::vector<int>> ids(2);
  std::atomic<int> streaming{0};
  std::atomic<bool> ended[2] = {false, false};
  std::vector<grpc::Status> status(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(In(120));
      auto reader = stub->GenerateStream(&ctx, background(i));
      v1::GenerateResponse m;
      bool first = true;
      while (reader->Read(&m)) {
        ids[i].insert(ids[i].end(), m.token_ids().begin(), m.token_ids().end());
        if (first && m.token_ids_size() > 0) {
          first = false;
          ++streaming;
        }
      }
      status[i] = reader->Finish();
      ended[i] = true;
    });
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (streaming < 2 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(streaming, 2);
  // No slot is free: the urgent request preempts the newer background one.
  v1::GenerateRequest urgent = Request("Urgent:", 8);
  urgent.set_priority(-1);
  v1::GenerateResponse u;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    grpc::Status st = stub->Generate(&ctx, urgent, &u);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_EQ(u.token_ids_size(), 8);
  EXPECT_FALSE(ended[0] || ended[1]) << "it did not wait for a 200-token background request to end";
  for (auto& t : threads) t.join();
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    EXPECT_TRUE(status[i].ok()) << "preempted, not failed: " << status[i].error_message();
    grpc::ClientContext ctx;
    ctx.set_deadline(In(120));
    v1::GenerateResponse solo;
    ASSERT_TRUE(stub->Generate(&ctx, background(i), &solo).ok());
    EXPECT_EQ(ids[i], std::vector<int>(solo.token_ids().begin(), solo.token_ids().end()))
        << "the preempted request's tokens are those it gets alone";
  }
  auto m = Scrape(app->metrics_port());
  EXPECT_EQ(m["modserve_priority_preemptions_total"], 1);
  EXPECT_EQ(m["modserve_kv_cache_usage_ratio"], 0);
}

// --- the mod-server process and SIGTERM ---------------------------------------

using testing::Process;
using testing::ReadUntil;
using testing::Spawn;
using testing::WaitExit;

TEST(ServerProcess, SigtermDrainsInFlightRequestsAndExitsZero) {
  Process p = Spawn({std::string(MODSERVE_BINARY_DIR) + "/mod-server", "--model", kModel, "--listen", "127.0.0.1:0",
                     "--metrics-listen", "127.0.0.1:0", "--drain-grace-seconds", "20"});
  auto m = ReadUntil(p, std::regex("\\(port (\\d+)\\)"), 60);
  ASSERT_FALSE(m.empty()) << p.err;
  const std::string address = "127.0.0.1:" + m[1].str();
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = v1::Generator::NewStub(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);

  // A long request in flight when SIGTERM arrives, and 16 more beside it so
  // that the drain (which lasts until they finish) outlasts the calls made
  // during it even on a fast machine: one 200-token request alone can finish
  // within 0.3 s, before the late call below arrives (seen once in CI).
  constexpr int kBeside = 16;
  std::vector<int> beside_tokens(kBeside, 0);
  std::vector<grpc::Status> beside_status(kBeside);
  std::atomic<int> beside_started{0};
  std::vector<std::thread> beside;
  for (int i = 0; i < kBeside; ++i) {
    beside.emplace_back([&, i] {
      grpc::ClientContext bc;
      bc.set_deadline(In(60));
      auto br = stub->GenerateStream(&bc, Request("Beside " + std::to_string(i), 200));
      v1::GenerateResponse bm;
      bool first = true;
      while (br->Read(&bm)) {
        if (first) ++beside_started;
        first = false;
        beside_tokens[i] += bm.token_ids_size();
      }
      beside_status[i] = br->Finish();
    });
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(In(60));
  auto reader = stub->GenerateStream(&ctx, Request("The jury said ", 200));
  v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  for (int i = 0; i < 1000 && beside_started < kBeside; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(p.pid, SIGTERM);
  ASSERT_FALSE(ReadUntil(p, std::regex("draining"), 10).empty()) << p.err;

  // While draining: NOT_SERVING, and new requests are refused with UNAVAILABLE.
  {
    grpc::ClientContext hc;
    hc.set_deadline(In(5));
    HealthCheckResponse hr;
    ASSERT_TRUE(health->Check(&hc, {}, &hr).ok());
    EXPECT_EQ(hr.status(), HealthCheckResponse::NOT_SERVING);
    grpc::ClientContext uc;
    uc.set_deadline(In(5));
    v1::GenerateResponse u;
    EXPECT_EQ(stub->Generate(&uc, Request("late", 4), &u).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  int tokens = msg.token_ids_size();
  while (reader->Read(&msg)) tokens += msg.token_ids_size();
  grpc::Status st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(tokens, 200);
  EXPECT_EQ(msg.finish_reason(), v1::FINISH_REASON_LENGTH);
  for (auto& t : beside) t.join();
  for (int i = 0; i < kBeside; ++i) {
    EXPECT_TRUE(beside_status[i].ok()) << i << ": " << beside_status[i].error_message();
    EXPECT_EQ(beside_tokens[i], 200) << i;
  }
  EXPECT_EQ(WaitExit(p.pid, 30), 0) << p.err;
  ::close(p.err_fd);
}

// Writes a safetensors file holding one f32 tensor "padding" of `numel`
// zeros, as a sparse file (instant, and no disk is used for the zeros).
void WriteSparsePaddingFile(const std::string& path, uint64_t numel) {
  const std::string header = nlohmann::json{{"padding", {{"dtype", "F32"}, {"shape", {numel}}, {"data_offsets", {0, 4 * numel}}}}}.dump();
  const std::vector<uint8_t> head = testing::SafetensorsBytes(header, 0);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(head.data()), static_cast<std::streamsize>(head.size()));
  std::filesystem::resize_file(path, head.size() + 4 * numel);
}

// SIGTERM while the model loads: nothing is in flight, so the process exits
// 0 at once rather than after the load (a large model can outlast the
// orchestrator's grace period). The load is made long by a config 16 times
// the shipped model's width (~257 M parameters) and a file of 160 M zero
// parameters (enough to pass the loader's check that the config does not
// imply more than twice the file's parameters): the model is built and
// initialized (seconds) before its tensors are found missing from the file,
// which would end the load with exit 1.
TEST(ServerProcess, SigtermWhileLoadingExitsZeroAtOnce) {
  const std::string dir = testing::TempDir("loading_model");
  nlohmann::json cfg;
  std::ifstream(std::string(kModel) + "/config.json") >> cfg;
  cfg["architecture"]["d_model"] = 3072;
  cfg["architecture"]["n_heads"] = 24;
  std::ofstream(dir + "/config.json") << cfg.dump();
  WriteSparsePaddingFile(dir + "/model.safetensors", 160'000'000);
  Process p = Spawn({std::string(MODSERVE_BINARY_DIR) + "/mod-server", "--model", dir, "--listen", "127.0.0.1:0",
                     "--metrics-listen", "127.0.0.1:0"});
  testing::KillAtExit guard{p};
  ASSERT_FALSE(ReadUntil(p, std::regex("loading"), 30).empty()) << p.err;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // inside the load, building the model
  ::kill(p.pid, SIGTERM);
  EXPECT_EQ(WaitExit(p.pid, 10), 0) << p.err;
  p.pid = -1;
  testing::ReadToEnd(p, 2);
  EXPECT_NE(p.err.find("stop signal before serving"), std::string::npos) << p.err;
  EXPECT_EQ(p.err.find("serving modserve.v1.Generator"), std::string::npos) << p.err;
  ::close(p.err_fd);
}

// A second SIGTERM during a long drain ends it at once: the requests still
// running or queued end with UNAVAILABLE naming why, none is left without
// an answer, and the process exits 0. (One request runs at a time, so the
// 24 queued behind it would take seconds against a 120 s grace.)
TEST(ServerProcess, ASecondSigtermEndsTheDrainAtOnce) {
  Process p = Spawn({std::string(MODSERVE_BINARY_DIR) + "/mod-server", "--model", kModel, "--listen", "127.0.0.1:0",
                     "--metrics-listen", "127.0.0.1:0", "--drain-grace-seconds", "120", "--max-running", "1"});
  testing::KillAtExit guard{p};
  auto m = ReadUntil(p, std::regex("\\(port (\\d+)\\)"), 60);
  ASSERT_FALSE(m.empty()) << p.err;
  auto stub = v1::Generator::NewStub(grpc::CreateChannel("127.0.0.1:" + m[1].str(), grpc::InsecureChannelCredentials()));
  constexpr int kStreams = 24;
  std::vector<grpc::Status> status(kStreams);
  std::atomic<int> first_tokens{0};
  std::vector<std::thread> streams;
  for (int i = 0; i < kStreams; ++i) {
    streams.emplace_back([&, i] {
      grpc::ClientContext c;
      c.set_deadline(In(120));
      v1::GenerateRequest r = Request("Drain " + std::to_string(i), 200);
      r.set_ignore_eos(true);
      auto reader = stub->GenerateStream(&c, r);
      v1::GenerateResponse msg;
      bool first = true;
      while (reader->Read(&msg)) {
        if (first) ++first_tokens;
        first = false;
      }
      status[i] = reader->Finish();
    });
  }
  for (int i = 0; i < 2000 && first_tokens == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_GT(first_tokens.load(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the rest are queued by now
  ::kill(p.pid, SIGTERM);
  ASSERT_FALSE(ReadUntil(p, std::regex("draining"), 10).empty()) << p.err;
  const auto second = std::chrono::steady_clock::now();
  ::kill(p.pid, SIGTERM);
  EXPECT_EQ(WaitExit(p.pid, 20), 0) << p.err;
  p.pid = -1;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - second).count();
  for (auto& t : streams) t.join();
  int ok = 0, cut = 0;
  for (int i = 0; i < kStreams; ++i) {
    if (status[i].ok()) {
      ++ok;
    } else {
      EXPECT_EQ(status[i].error_code(), grpc::StatusCode::UNAVAILABLE) << i << ": " << status[i].error_message();
      EXPECT_NE(status[i].error_message().find("second stop signal"), std::string::npos) << status[i].error_message();
      ++cut;
    }
  }
  EXPECT_GT(cut, 0) << "every request finished: the second SIGTERM did not cut the drain (" << seconds << " s)";
  testing::ReadToEnd(p, 2);
  EXPECT_NE(p.err.find("SIGTERM during the drain"), std::string::npos) << p.err;
  std::printf("second SIGTERM: exit after %.2f s; %d requests finished, %d ended UNAVAILABLE\n", seconds, ok, cut);
  ::close(p.err_fd);
}

// With request_log set, every ended Generate call writes one JSON line: the
// request id, rpc, peer, code (and message), finish reason, the stop that
// matched, the guide's kind, token counts equal to the usage the client got,
// TTFT within the duration; Tokenize and Detokenize calls write one too.
TEST(ServerRequestLog, OneJsonLinePerCallNamingItsOutcome) {
  const std::string path = testing::TempDir("request_log") + "/requests.log";
  ServerConfig c = TestConfig();
  c.request_log = path;
  auto app = StartApp(c);
  ASSERT_NE(app, nullptr);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(app->grpc_port()), grpc::InsecureChannelCredentials());
  auto stub = v1::Generator::NewStub(channel);
  v1::GenerateResponse unary;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    v1::GenerateRequest r = Request("The jury said ", 5);
    r.set_request_id("log-unary");
    ASSERT_TRUE(stub->Generate(&ctx, r, &unary).ok());
  }
  v1::GenerateResponse last;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    v1::GenerateRequest r = Request("The jury said ", 7);
    r.set_request_id("log-stream");
    auto reader = stub->GenerateStream(&ctx, r);
    for (v1::GenerateResponse m; reader->Read(&m);) last = m;
    ASSERT_TRUE(reader->Finish().ok());
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    v1::GenerateRequest r = Request("The jury said ", 5);
    r.set_request_id("log-n");
    r.set_n(2);
    v1::GenerateResponse both;
    ASSERT_TRUE(stub->Generate(&ctx, r, &both).ok());
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    v1::GenerateRequest r = Request("The jury said ", 5);
    r.set_max_tokens(-1);
    r.set_request_id("log-refused");  // named in the log though refused
    v1::GenerateResponse ignored;
    EXPECT_EQ(stub->Generate(&ctx, r, &ignored).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    v1::GenerateRequest r = Request("The jury said ", 200);
    r.set_request_id("log-cancel");
    auto reader = stub->GenerateStream(&ctx, r);
    v1::GenerateResponse m;
    ASSERT_TRUE(reader->Read(&m));
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  v1::GenerateResponse guided;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    v1::GenerateRequest r = Request("The jury found the defendant ", 20);
    r.set_request_id("log-guided");
    for (const char* c : {"guilty", "not guilty"}) r.add_guided_choice(c);
    r.add_stop("ilt");  // in both choices: the completion ends on it
    ASSERT_TRUE(stub->Generate(&ctx, r, &guided).ok());
    ASSERT_EQ(guided.finish_reason(), v1::FINISH_REASON_STOP) << guided.text();
  }
  {  // Tokenize and Detokenize are logged and counted too
    grpc::ClientContext ctx;
    v1::TokenizeRequest tr;
    tr.set_text("The jury");
    v1::TokenizeResponse tokens;
    ASSERT_TRUE(stub->Tokenize(&ctx, tr, &tokens).ok());
    grpc::ClientContext bad_ctx;
    v1::DetokenizeRequest dr;
    dr.add_token_ids(100000);
    v1::DetokenizeResponse text;
    EXPECT_EQ(stub->Detokenize(&bad_ctx, dr, &text).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  const auto metrics = Scrape(app->metrics_port());
  EXPECT_EQ(metrics.at("modserve_tokenization_requests_total{code=\"OK\",rpc=\"Tokenize\"}"), 1);
  EXPECT_EQ(metrics.at("modserve_tokenization_requests_total{code=\"INVALID_ARGUMENT\",rpc=\"Detokenize\"}"), 1);
  // The server ends the cancelled call within a step of hearing of it.
  const std::string cancelled = "modserve_requests_total{code=\"CANCELLED\",finish_reason=\"none\"}";
  for (int i = 0; i < 250 && Scrape(app->metrics_port())[cancelled] < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  app.reset();  // drains: every line is written

  std::ifstream in(path);
  std::map<std::string, nlohmann::json> by_id;
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    auto j = nlohmann::json::parse(line);  // throws (fails the test) unless each line is JSON
    by_id[j.value("request_id", j["rpc"].get<std::string>())] = j;  // Tokenize, Detokenize: no id
  }
  EXPECT_EQ(lines, 8);
  const auto& u = by_id["log-unary"];
  EXPECT_EQ(u["rpc"], "Generate");
  EXPECT_EQ(u["code"], "OK");
  EXPECT_EQ(u["finish_reason"], "length");
  EXPECT_EQ(u["prompt_tokens"], unary.usage().prompt_tokens());
  EXPECT_EQ(u["completion_tokens"], 5);
  EXPECT_EQ(u["routed_computed"], unary.usage().routed_computed());
  EXPECT_EQ(u["routed_skipped"], unary.usage().routed_skipped());
  EXPECT_NE(u["peer"].get<std::string>().find("127.0.0.1"), std::string::npos);
  EXPECT_GT(u["ttft_ms"].get<double>(), 0);
  EXPECT_LE(u["ttft_ms"].get<double>(), u["duration_ms"].get<double>());
  EXPECT_EQ(u["time"].get<std::string>().size(), 24u) << "UTC, milliseconds: " << u["time"];
  const auto& s = by_id["log-stream"];
  EXPECT_EQ(s["rpc"], "GenerateStream");
  EXPECT_EQ(s["code"], "OK");
  EXPECT_EQ(s["completion_tokens"], 7);
  EXPECT_EQ(s["routed_skipped"], last.usage().routed_skipped());
  const auto& two = by_id["log-n"];
  EXPECT_EQ(two["n"], 2);
  EXPECT_EQ(two["finish_reason"], "length,length") << "each completion's, in index order";
  EXPECT_EQ(two["prompt_tokens"], unary.usage().prompt_tokens()) << "the prompt once";
  EXPECT_EQ(two["completion_tokens"], 10) << "summed over the completions";
  EXPECT_FALSE(u.contains("n"));
  const auto& bad = by_id["log-refused"];
  EXPECT_EQ(bad["code"], "INVALID_ARGUMENT");
  EXPECT_NE(bad["message"].get<std::string>().find("max_tokens must be in"), std::string::npos);
  EXPECT_FALSE(bad.contains("ttft_ms"));
  const auto& x = by_id["log-cancel"];
  EXPECT_EQ(x["code"], "CANCELLED");
  EXPECT_FALSE(x.contains("completion_tokens")) << "not finished";
  EXPECT_GT(x["ttft_ms"].get<double>(), 0);
  const auto& g = by_id["log-guided"];
  EXPECT_EQ(g["guide"], "choice");
  EXPECT_EQ(g["finish_reason"], "stop");
  EXPECT_EQ(g["stop"], "ilt") << "the stop string that matched";
  EXPECT_FALSE(u.contains("guide"));
  EXPECT_FALSE(u.contains("stop")) << "ended on length";
  const auto& t = by_id["Tokenize"];
  EXPECT_EQ(t["code"], "OK");
  EXPECT_EQ(t["prompt_tokens"], 9) << "8 bytes and BOS";
  EXPECT_NE(t["peer"].get<std::string>().find("127.0.0.1"), std::string::npos);
  const auto& d = by_id["Detokenize"];
  EXPECT_EQ(d["code"], "INVALID_ARGUMENT");
  EXPECT_NE(d["message"].get<std::string>().find("token_ids"), std::string::npos) << d["message"];

  c.request_log = "/nonexistent-dir/requests.log";
  auto refused = ServerApp::Start(c, LoadLibTorchEngine);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("request_log: cannot open /nonexistent-dir/requests.log"), std::string::npos);
}

// logrotate's way: the log file is moved away, SIGHUP, and the server writes
// its next lines to a new file at the configured path, and keeps serving.
TEST(ServerProcess, SighupReopensTheRequestLogFile) {
  const std::string dir = testing::TempDir("sighup");
  const std::string path = dir + "/requests.log";
  Process p = Spawn({std::string(MODSERVE_BINARY_DIR) + "/mod-server", "--model", kModel, "--listen", "127.0.0.1:0",
                     "--metrics-listen", "127.0.0.1:0", "--request-log", path});
  testing::KillAtExit guard{p};
  auto m = ReadUntil(p, std::regex("\\(port (\\d+)\\)"), 60);
  ASSERT_FALSE(m.empty()) << p.err;
  auto stub = v1::Generator::NewStub(grpc::CreateChannel("127.0.0.1:" + m[1].str(), grpc::InsecureChannelCredentials()));
  auto generate = [&](const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    v1::GenerateRequest r = Request("The jury said ", 3);
    r.set_request_id(id);
    v1::GenerateResponse u;
    return stub->Generate(&ctx, r, &u).ok();
  };
  auto lines = [](const std::string& file) {
    std::ifstream in(file);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  };
  auto wait_for_lines = [&](const std::string& file, size_t n) {
    for (int i = 0; i < 500 && lines(file).size() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return lines(file).size();
  };
  ASSERT_TRUE(generate("before-rotation"));
  ASSERT_EQ(wait_for_lines(path, 1), 1u);
  ASSERT_EQ(std::rename(path.c_str(), (path + ".1").c_str()), 0);
  ::kill(p.pid, SIGHUP);
  ASSERT_FALSE(ReadUntil(p, std::regex("SIGHUP: request log reopened"), 10).empty()) << p.err;
  ASSERT_TRUE(generate("after-rotation")) << "the server keeps serving after SIGHUP";
  ASSERT_EQ(wait_for_lines(path, 1), 1u);
  const auto rotated = lines(path + ".1");
  ASSERT_EQ(rotated.size(), 1u);
  EXPECT_NE(rotated[0].find("\"before-rotation\""), std::string::npos);
  EXPECT_NE(lines(path)[0].find("\"after-rotation\""), std::string::npos);
  ::kill(p.pid, SIGTERM);
  EXPECT_EQ(WaitExit(p.pid, 30), 0);
  p.pid = -1;  // reaped
}

TEST(ServerProcess, BadModelPathFailsAtStartNamingIt) {
  Process p = Spawn({std::string(MODSERVE_BINARY_DIR) + "/mod-server", "--model", "/nonexistent/model", "--listen",
                     "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  const int code = WaitExit(p.pid, 30);
  ReadUntil(p, std::regex("is not a checkpoint directory"), 5);
  EXPECT_NE(code, 0);
  EXPECT_NE(p.err.find("/nonexistent/model"), std::string::npos) << p.err;
  ::close(p.err_fd);
}

}  // namespace
}  // namespace modserve
