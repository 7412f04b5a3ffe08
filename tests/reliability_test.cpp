// Reliability of the mod-server process (shipped model) under load, faults
// and bad start-up input. Each test prints its figures:
// - Soak: 5,000 requests from 64 concurrent clients, 30% cancelled at random
//   moments and 10% with deadlines that expire: afterwards no KV block is in
//   use, the server counted every request once, every completion has a
//   finish reason that fits its tokens, and resident memory after warm-up
//   grew by at most 10%.
// - Overload: a burst of 10x the queue's capacity: the excess is refused with
//   RESOURCE_EXHAUSTED at once, every accepted request completes, memory
//   stays bounded.
// - Drain: SIGTERM with 24 streams in flight: they all complete, health is
//   NOT_SERVING, new calls get UNAVAILABLE, exit code 0, and the process
//   exits once they are answered (not after gRPC's shutdown deadline).
// - Start-up: broken configs and checkpoints (truncated, wrong shape, wrong
//   dtype, lying offsets, NaN weights, bad config.json) end the process with
//   a non-zero exit code and a message naming the problem, never a crash.
// - Secrets: the bearer token and the TLS key never appear in the log.
// - I/O priority: with io_priority idle only the step thread keeps its
//   priority, threads gRPC starts under load included, and serving works;
//   with normal, no thread is lowered.
// (Memory pressure with preemption is in server_e2e_tests.)
//
// MODSERVE_SOAK_REQUESTS overrides the soak's request count (for quick local runs).
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc_test_util.h"
#include "metrics_scrape.h"
#include "modserve/v1/modserve.grpc.pb.h"
#include "process.h"
#include "test_pki.h"

namespace modserve {
namespace {

using testing::In;
using testing::Request;

namespace fs = std::filesystem;
using grpc::health::v1::HealthCheckResponse;
using testing::Process;
using testing::ReadUntil;
using testing::ResidentBytes;
using testing::Scrape;
using testing::WaitExit;

const std::string kModel = std::string(MODSERVE_SOURCE_DIR) + "/models/mod-small";
const std::string kServer = std::string(MODSERVE_BINARY_DIR) + "/mod-server";
constexpr int kEos = 257;

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// A mod-server child process on free loopback ports.
struct Server {
  Process proc;
  int grpc_port = 0, metrics_port = 0;
  std::shared_ptr<grpc::Channel> channel;

  std::map<std::string, double> Metrics() const { return Scrape(metrics_port); }
  int64_t rss() const { return ResidentBytes(proc.pid); }

  // Waits until nothing runs or waits and no KV block is held.
  bool WaitIdle(double seconds) const {
    const auto t0 = std::chrono::steady_clock::now();
    while (Seconds(t0) < seconds) {
      auto m = Metrics();
      if (m["modserve_running_requests"] == 0 && m["modserve_queue_requests"] == 0 &&
          m["modserve_kv_cache_usage_ratio"] == 0) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
};

Server StartServer(std::vector<std::string> flags) {
  std::vector<std::string> args = {kServer, "--model", kModel, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"};
  args.insert(args.end(), flags.begin(), flags.end());
  Server s;
  s.proc = testing::Spawn(args);
  auto m = ReadUntil(s.proc, std::regex("\\(port (\\d+)\\), metrics on \\S+ \\(port (\\d+)\\)"), 60);
  EXPECT_FALSE(m.empty()) << s.proc.err;
  if (m.empty()) return s;
  s.grpc_port = std::stoi(m[1].str());
  s.metrics_port = std::stoi(m[2].str());
  s.channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(s.grpc_port), grpc::InsecureChannelCredentials());
  return s;
}

// Sends SIGTERM and returns the exit code.
int Stop(Server& s) {
  ::kill(s.proc.pid, SIGTERM);
  const int code = WaitExit(s.proc.pid, 60);
  testing::ReadToEnd(s.proc, 5);
  ::close(s.proc.err_fd);
  return code;
}

double Sum(const std::map<std::string, double>& m, const std::string& prefix) {
  double total = 0;
  for (const auto& [name, value] : m) {
    if (name.rfind(prefix, 0) == 0) total += value;
  }
  return total;
}

// --- soak -------------------------------------------------------------------

enum class Kind { kNormal, kUnary, kCancel, kDeadline };

struct Outcome {
  std::map<std::string, int64_t> by_code;  // client-side status codes
  int64_t finished_ok = 0, tokens = 0, bad_finish = 0, expired_as_asked = 0, cancelled_as_asked = 0;
  std::vector<std::string> problems;
};

std::string CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    default: return "code " + std::to_string(static_cast<int>(c));
  }
}

// Checks a completed request's finish reason against its tokens and usage.
void CheckCompletion(const v1::GenerateRequest& r, const std::vector<int>& ids, const std::string& text,
                     const v1::GenerateResponse& last, Outcome* out) {
  auto problem = [&](const std::string& what) {
    ++out->bad_finish;
    if (out->problems.size() < 5) out->problems.push_back(what + " (prompt \"" + r.prompt() + "\")");
  };
  const int n = static_cast<int>(ids.size());
  if (last.usage().completion_tokens() != n) problem("usage.completion_tokens != tokens received");
  if (last.usage().prompt_tokens() != static_cast<int>(r.prompt().size()) + 1) problem("usage.prompt_tokens is wrong");
  switch (last.finish_reason()) {
    case v1::FINISH_REASON_LENGTH:
      if (n != r.max_tokens()) problem("finish LENGTH after " + std::to_string(n) + " of " + std::to_string(r.max_tokens()));
      break;
    case v1::FINISH_REASON_EOS:
      if (n == 0 || ids.back() != kEos || n > r.max_tokens()) problem("finish EOS without EOS last");
      break;
    case v1::FINISH_REASON_STOP: {
      bool listed = r.stop_size() > 0;
      for (const auto& s : r.stop()) listed = listed && text.find(s) == std::string::npos;
      if (!listed || n > r.max_tokens()) problem("finish STOP without a stop string, or with it in the text");
      break;
    }
    default: problem("no finish reason");
  }
}

TEST(Soak, FiveThousandRequestsWithCancelsAndDeadlinesLeaveNothingBehind) {
  const char* env = std::getenv("MODSERVE_SOAK_REQUESTS");
  const int kRequests = env != nullptr ? std::atoi(env) : 5000;
  const int kClients = 64, kWarmup = kRequests / 10;
  Server s = StartServer({"--max-queue", "1024", "--max-running", "64"});
  ASSERT_GT(s.grpc_port, 0);
  auto stub = v1::Generator::NewStub(s.channel);

  std::atomic<int> next{0}, done{0};
  std::atomic<int64_t> rss_warm{0}, rss_peak{0};
  std::vector<Outcome> outcomes(kClients);
  std::vector<std::thread> clients;
  const auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      Outcome& out = outcomes[static_cast<size_t>(c)];
      for (int i = next++; i < kRequests; i = next++) {
        std::mt19937 rng(static_cast<unsigned>(i));
        const int roll = static_cast<int>(rng() % 100);
        const Kind kind = roll < 30 ? Kind::kCancel : roll < 40 ? Kind::kDeadline : roll < 46 ? Kind::kUnary : Kind::kNormal;
        std::string prompt;
        const int len = 4 + static_cast<int>(rng() % 44);
        for (int k = 0; k < len; ++k) prompt += k % 6 == 5 ? ' ' : static_cast<char>('a' + rng() % 26);
        v1::GenerateRequest r = Request(prompt, kind == Kind::kDeadline ? 120 : 1 + static_cast<int>(rng() % 24));
        if (rng() % 4 == 0) {
          r.set_temperature(0.9f);
          r.set_seed(rng());
        }
        if (rng() % 8 == 0) r.add_stop(std::string(1, static_cast<char>('a' + rng() % 26)));
        grpc::ClientContext ctx;
        ctx.set_deadline(kind == Kind::kDeadline ? In(0.1 + 0.2 * (rng() % 100) / 100.0) : In(120));
        grpc::Status st;
        std::vector<int> ids;
        std::string text;
        v1::GenerateResponse last;
        if (kind == Kind::kUnary) {
          st = stub->Generate(&ctx, r, &last);
          ids.assign(last.token_ids().begin(), last.token_ids().end());
          text = last.text();
        } else {
          auto reader = stub->GenerateStream(&ctx, r);
          int cancel_after = -1;  // messages to read before cancelling
          if (kind == Kind::kCancel) {
            reader->WaitForInitialMetadata();  // the server has queued it: cancelling now is seen
            cancel_after = static_cast<int>(rng() % 4);
            if (cancel_after == 0) ctx.TryCancel();  // while queued or prefilling
          }
          v1::GenerateResponse m;
          for (int got = 0; reader->Read(&m);) {
            for (int id : m.token_ids()) ids.push_back(id);
            text += m.text();
            last = m;
            if (++got == cancel_after) ctx.TryCancel();
          }
          st = reader->Finish();
        }
        ++out.by_code[CodeName(st.error_code())];
        if (st.ok()) {
          ++out.finished_ok;
          out.tokens += static_cast<int64_t>(ids.size());
          CheckCompletion(r, ids, text, last, &out);
        } else if (kind == Kind::kCancel && st.error_code() == grpc::StatusCode::CANCELLED) {
          ++out.cancelled_as_asked;
        } else if (kind == Kind::kDeadline && st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
          ++out.expired_as_asked;
        } else if (out.problems.size() < 5) {
          out.problems.push_back("unexpected " + CodeName(st.error_code()) + ": " + st.error_message());
        }
        const int finished = ++done;
        if (finished == kWarmup) rss_warm = s.rss();
        if (finished % 100 == 0) rss_peak = std::max<int64_t>(rss_peak, s.rss());
      }
    });
  }
  for (auto& t : clients) t.join();
  const double seconds = Seconds(t0);

  Outcome total;
  for (const auto& o : outcomes) {
    for (const auto& [code, n] : o.by_code) total.by_code[code] += n;
    total.finished_ok += o.finished_ok;
    total.tokens += o.tokens;
    total.bad_finish += o.bad_finish;
    total.cancelled_as_asked += o.cancelled_as_asked;
    total.expired_as_asked += o.expired_as_asked;
    total.problems.insert(total.problems.end(), o.problems.begin(), o.problems.end());
  }
  ASSERT_TRUE(s.WaitIdle(10)) << "requests or KV blocks left behind";
  const int64_t rss_end = s.rss();
  auto m = s.Metrics();

  std::printf("soak: %d requests, %d clients, %.1f s (%.0f req/s); %lld completed (%lld tokens), "
              "%lld cancelled as asked, %lld expired as asked\n",
              kRequests, kClients, seconds, kRequests / seconds, static_cast<long long>(total.finished_ok),
              static_cast<long long>(total.tokens), static_cast<long long>(total.cancelled_as_asked),
              static_cast<long long>(total.expired_as_asked));
  for (const auto& [code, n] : total.by_code) std::printf("soak: client saw %s: %lld\n", code.c_str(), static_cast<long long>(n));
  std::printf("soak: resident memory after warm-up %.1f MiB, peak %.1f MiB, at the end %.1f MiB (%+.1f%%)\n",
              rss_warm / 1048576.0, rss_peak / 1048576.0, rss_end / 1048576.0, 100.0 * (rss_end - rss_warm) / rss_warm);
  for (const auto& p : total.problems) ADD_FAILURE() << p;

  EXPECT_EQ(total.bad_finish, 0);
  // Every request was seen and counted exactly once, whatever its end.
  EXPECT_EQ(Sum(m, "modserve_requests_total{"), kRequests);
  EXPECT_EQ(total.by_code["OK"] + total.by_code["CANCELLED"] + total.by_code["DEADLINE_EXCEEDED"], kRequests);
  // The server's OK count can exceed the clients' only by requests that
  // finished just as the client cancelled or its deadline passed.
  const double server_ok = Sum(m, "modserve_requests_total{code=\"OK\"");
  EXPECT_GE(server_ok, total.by_code["OK"]);
  EXPECT_LE(server_ok, total.by_code["OK"] + total.by_code["CANCELLED"] + total.by_code["DEADLINE_EXCEEDED"]);
  EXPECT_GT(total.cancelled_as_asked, kRequests / 5);  // most of the 30% really were cancelled
  EXPECT_GT(total.expired_as_asked, kRequests / 20);   // and most of the 10% expired
  EXPECT_EQ(m["modserve_kv_cache_usage_ratio"], 0);
  EXPECT_LE(rss_end, rss_warm * 1.10) << "resident memory grew by more than 10% after warm-up";
  EXPECT_EQ(Stop(s), 0);
}

// --- overload ---------------------------------------------------------------

TEST(Overload, BurstOfTenTimesTheQueueIsRefusedAtOnceAndTheRestComplete) {
  // Each request is long enough (kTokens steps) that few finish while the
  // burst is still arriving: the 160 threads reach the server over tens of
  // milliseconds on a loaded machine, and a request that finishes in that
  // window frees a slot that a later arrival rightly takes.
  const int kQueue = 16, kBurst = 10 * kQueue, kTokens = 160;
  Server s = StartServer({"--max-queue", std::to_string(kQueue), "--max-running", "8"});
  ASSERT_GT(s.grpc_port, 0);
  auto stub = v1::Generator::NewStub(s.channel);
  {  // warm up, then measure memory before the burst
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    v1::GenerateResponse u;
    ASSERT_TRUE(stub->Generate(&ctx, Request("warm up", 32), &u).ok());
  }
  const int64_t rss_before = s.rss();
  std::vector<grpc::Status> status(kBurst);
  std::vector<double> seconds(kBurst);
  std::vector<int> tokens(kBurst);
  std::atomic<int> ready{0};  // every thread calls at the same moment
  std::vector<std::thread> threads;
  for (int i = 0; i < kBurst; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(In(120));
      v1::GenerateResponse u;
      ++ready;
      while (ready < kBurst) std::this_thread::yield();
      const auto t0 = std::chrono::steady_clock::now();
      status[i] = stub->Generate(&ctx, Request("Burst request " + std::to_string(i), kTokens), &u);
      seconds[i] = Seconds(t0);
      tokens[i] = u.token_ids_size();
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, refused = 0, other = 0;
  double slowest_refusal = 0;
  for (int i = 0; i < kBurst; ++i) {
    if (status[i].ok()) {
      ++ok;
      EXPECT_EQ(tokens[i], kTokens);
    } else if (status[i].error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
      slowest_refusal = std::max(slowest_refusal, seconds[i]);
    } else {
      ++other;
      ADD_FAILURE() << status[i].error_message();
    }
  }
  ASSERT_TRUE(s.WaitIdle(10));
  const int64_t rss_after = s.rss();
  std::printf("overload: burst of %d against a queue of %d: %d completed, %d refused (slowest refusal %.1f ms); "
              "resident memory %.1f -> %.1f MiB\n",
              kBurst, kQueue, ok, refused, slowest_refusal * 1e3, rss_before / 1048576.0, rss_after / 1048576.0);
  EXPECT_EQ(other, 0);
  EXPECT_GE(ok, kQueue);                      // the queue's worth, at least, was accepted and completed
  EXPECT_GE(refused, kBurst - 3 * kQueue);    // the excess was refused
  EXPECT_LT(slowest_refusal, 1.0);            // at once, not after waiting for a slot
  EXPECT_EQ(s.Metrics()["modserve_requests_total{code=\"RESOURCE_EXHAUSTED\",finish_reason=\"none\"}"], refused);
  EXPECT_LE(rss_after, rss_before * 1.10);
  EXPECT_EQ(Stop(s), 0);
}

// --- streams in flight --------------------------------------------------------

// `n` GenerateStream calls of `tokens` tokens each, one client thread per
// call, started at once: `streaming` counts the calls that have their first
// token, `completed` those that ended OK with all their tokens and finish
// reason LENGTH.
class Streams {
 public:
  Streams(const Server& s, const std::string& prefix, int n, int tokens) : stub_(v1::Generator::NewStub(s.channel)) {
    for (int i = 0; i < n; ++i) {
      clients_.emplace_back([this, prefix, i, tokens] {
        grpc::ClientContext ctx;
        ctx.set_deadline(In(60));
        auto reader = stub_->GenerateStream(&ctx, Request(prefix + " " + std::to_string(i) + ":", tokens));
        v1::GenerateResponse m;
        int got = 0;
        while (reader->Read(&m)) {
          if (got == 0 && m.token_ids_size() > 0) ++streaming;
          got += m.token_ids_size();
        }
        if (reader->Finish().ok() && got == tokens && m.finish_reason() == v1::FINISH_REASON_LENGTH) ++completed;
      });
    }
  }
  ~Streams() { Join(); }
  // Waits for every call to end; returns how many completed.
  int Join() {
    for (auto& c : clients_) {
      if (c.joinable()) c.join();
    }
    return completed.load();
  }

  std::atomic<int> streaming{0}, completed{0};

 private:
  std::unique_ptr<v1::Generator::Stub> stub_;
  std::vector<std::thread> clients_;  // last: they use the members above
};

// --- drain ------------------------------------------------------------------

TEST(Drain, SigtermUnderLoadFinishesInFlightRequestsAndExitsZero) {
  const int kStreams = 24, kTokens = 64;
  Server s = StartServer({"--drain-grace-seconds", "30"});
  ASSERT_GT(s.grpc_port, 0);
  auto stub = v1::Generator::NewStub(s.channel);
  Streams streams(s, "In flight", kStreams, kTokens);
  while (streams.streaming < kStreams) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(s.proc.pid, SIGTERM);
  ASSERT_FALSE(ReadUntil(s.proc, std::regex("draining"), 10).empty()) << s.proc.err;
  auto health = grpc::health::v1::Health::NewStub(s.channel);
  grpc::ClientContext hc;
  hc.set_deadline(In(5));
  HealthCheckResponse hr;
  ASSERT_TRUE(health->Check(&hc, {}, &hr).ok());
  EXPECT_EQ(hr.status(), HealthCheckResponse::NOT_SERVING);
  int refused = 0;
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(5));
    v1::GenerateResponse u;
    refused += stub->Generate(&ctx, Request("too late", 4), &u).error_code() == grpc::StatusCode::UNAVAILABLE;
  }
  const int completed = streams.Join();
  const int code = WaitExit(s.proc.pid, 40);
  const double exit_seconds = Seconds(t0);
  std::printf("drain: %d streams in flight at SIGTERM, %d completed; exit %d after %.2f s\n", kStreams, completed, code,
              exit_seconds);
  // Once the last call is answered the server closes its connections: it
  // used to wait out gRPC's 2 s shutdown deadline whenever a client had sent
  // a call during the drain.
  EXPECT_LT(exit_seconds, 2.0) << "the drain waited for gRPC's shutdown deadline";
  EXPECT_EQ(refused, 5);
  EXPECT_EQ(completed, kStreams);
  EXPECT_EQ(code, 0) << s.proc.err;
  ::close(s.proc.err_fd);
}

// --- I/O priority -------------------------------------------------------------

TEST(IoPriority, IdleLeavesOnlyTheStepThreadAtNormalPriority) {
  constexpr int kSchedOther = 0, kSchedIdle = 5;
  Server s = StartServer({"--io-priority", "idle"});
  ASSERT_GT(s.grpc_port, 0);
  EXPECT_NE(s.proc.err.find("under SCHED_IDLE"), std::string::npos) << s.proc.err;
  EXPECT_EQ(Streams(s, "Priority", 16, 32).Join(), 16);
  const auto policies = testing::ThreadPolicies(s.proc.pid);  // after load: gRPC's later threads too
  int normal = 0, idle = 0;
  for (const auto& [tid, policy] : policies) {
    normal += policy == kSchedOther;
    idle += policy == kSchedIdle;
  }
  std::printf("io_priority idle: %d threads, %d normal, %d SCHED_IDLE\n", static_cast<int>(policies.size()), normal, idle);
  EXPECT_EQ(normal, 1);  // the step thread
  EXPECT_EQ(idle, static_cast<int>(policies.size()) - 1);
  EXPECT_EQ(Stop(s), 0);

  Server n = StartServer({"--io-priority", "normal"});
  ASSERT_GT(n.grpc_port, 0);
  EXPECT_EQ(Streams(n, "Priority", 4, 8).Join(), 4);
  for (const auto& [tid, policy] : testing::ThreadPolicies(n.proc.pid)) EXPECT_EQ(policy, kSchedOther) << "thread " << tid;
  EXPECT_EQ(n.proc.err.find("SCHED_IDLE"), std::string::npos) << n.proc.err;
  EXPECT_EQ(Stop(n), 0);
}

// --- start-up with broken configs and checkpoints ---------------------------

// Copies the shipped model to a fresh folder that a case may break.
std::string CopyModel(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/broken-" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy(kModel, dir, fs::copy_options::recursive);
  return dir;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

void WriteAll(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

// Rewrites model.safetensors with `edit` applied to its JSON header (and
// `data` edited in place).
void EditSafetensors(const std::string& dir, const std::function<void(nlohmann::json&, std::string&)>& edit) {
  const std::string path = dir + "/model.safetensors";
  const std::string file = ReadAll(path);
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  nlohmann::json header = nlohmann::json::parse(file.substr(8, n));
  std::string data = file.substr(8 + n);
  edit(header, data);
  const std::string h = header.dump();
  const uint64_t len = h.size();
  WriteAll(path, std::string(reinterpret_cast<const char*>(&len), 8) + h + data);
}

TEST(StartUp, BrokenConfigsAndCheckpointsExitNonZeroNamingTheProblem) {
  const std::string first_tensor = "layers.0.wqkv.weight";  // [3 d, d]
  struct Case {
    std::string name;
    std::function<std::vector<std::string>()> make;  // returns the flags
    std::vector<std::string> expect;                 // in stderr
  } cases[] = {
      {"unknown config key", [] { WriteAll(::testing::TempDir() + "/c1.yaml", "max_queu: 3\n");
                                  return std::vector<std::string>{"--config", ::testing::TempDir() + "/c1.yaml"}; },
       {"c1.yaml", "unknown key \"max_queu\""}},
      {"config not YAML", [] { WriteAll(::testing::TempDir() + "/c2.yaml", "a: [\n");
                               return std::vector<std::string>{"--config", ::testing::TempDir() + "/c2.yaml"}; },
       {"c2.yaml", "not valid YAML"}},
      {"config value of the wrong type", [] { WriteAll(::testing::TempDir() + "/c3.yaml", "kv_blocks: many\n");
                                              return std::vector<std::string>{"--config", ::testing::TempDir() + "/c3.yaml"}; },
       {"c3.yaml", "kv_blocks", "expected an integer"}},
      {"missing config file", [] { return std::vector<std::string>{"--config", "/nonexistent/mod.yaml"}; },
       {"/nonexistent/mod.yaml"}},
      {"truncated weights", [] {
         const std::string d = CopyModel("truncated");
         const std::string f = ReadAll(d + "/model.safetensors");
         WriteAll(d + "/model.safetensors", f.substr(0, f.size() / 2));
         return std::vector<std::string>{"--model", d};
       },
       {"model.safetensors"}},
      {"wrong shape", [&] {
         const std::string d = CopyModel("shape");
         EditSafetensors(d, [&](nlohmann::json& h, std::string&) {
           auto& shape = h[first_tensor]["shape"];
           std::swap(shape[0], shape[1]);  // same bytes, transposed
         });
         return std::vector<std::string>{"--model", d};
       },
       {"model.safetensors", first_tensor, "shape"}},
      {"wrong dtype", [&] {
         const std::string d = CopyModel("dtype");
         EditSafetensors(d, [&](nlohmann::json& h, std::string&) { h[first_tensor]["dtype"] = "I32"; });
         return std::vector<std::string>{"--model", d};
       },
       {"model.safetensors", "I32"}},
      {"header lying about offsets", [&] {
         const std::string d = CopyModel("offsets");
         EditSafetensors(d, [&](nlohmann::json& h, std::string& data) {
           h[first_tensor]["data_offsets"][1] = data.size() + 4096;
         });
         return std::vector<std::string>{"--model", d};
       },
       {"model.safetensors", first_tensor}},
      {"NaN weights", [&] {
         const std::string d = CopyModel("nan");
         EditSafetensors(d, [&](nlohmann::json& h, std::string& data) {
           const uint64_t begin = h[first_tensor]["data_offsets"][0];
           const float nan = std::nanf("");
           std::memcpy(&data[begin + 40], &nan, 4);
         });
         return std::vector<std::string>{"--model", d};
       },
       {"model.safetensors", first_tensor, "NaN"}},
      {"config.json not JSON", [] {
         const std::string d = CopyModel("json");
         WriteAll(d + "/config.json", "{\"d_model\": ");
         return std::vector<std::string>{"--model", d};
       },
       {"config.json"}},
      {"missing weights", [] {
         const std::string d = CopyModel("missing");
         fs::remove(d + "/model.safetensors");
         return std::vector<std::string>{"--model", d};
       },
       {"model.safetensors"}},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::string> args = {kServer, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"};
    const auto flags = c.make();
    args.insert(args.end(), flags.begin(), flags.end());
    Process p = testing::Spawn(args);
    const int code = WaitExit(p.pid, 60);
    testing::ReadToEnd(p, 5);
    ::close(p.err_fd);
    std::printf("start-up, %s: exit %d: %s", c.name.c_str(), code, p.err.c_str());
    EXPECT_GT(code, 0);
    EXPECT_LT(code, 128) << "killed by a signal";
    for (const auto& e : c.expect) EXPECT_NE(p.err.find(e), std::string::npos) << "expected \"" << e << "\" in: " << p.err;
  }
  for (const auto& entry : fs::directory_iterator(::testing::TempDir())) {
    if (entry.path().filename().string().rfind("broken-", 0) == 0) fs::remove_all(entry.path());
  }
}

// --- secrets ----------------------------------------------------------------

TEST(Secrets, TheTokenAndTheTlsKeyNeverReachTheLog) {
  const auto& pki = testing::Certs();
  ASSERT_TRUE(pki.ok());
  const std::string token = "tok-" + std::to_string(::getpid()) + "-abcdefghijklmnop";
  const std::string token_file = ::testing::TempDir() + "/secret-token";
  WriteAll(token_file, token + "\n");
  Server s = StartServer({"--auth-token-file", token_file, "--tls-cert-file", pki("server.pem"), "--tls-key-file",
                          pki("server.key")});
  ASSERT_GT(s.grpc_port, 0);
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = pki.Read("ca.pem");
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(s.grpc_port), grpc::SslCredentials(ssl), args);
  auto stub = v1::Generator::NewStub(channel);
  for (const std::string& auth : {"Bearer " + token, "Bearer wrong-" + token, std::string("")}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(30));
    if (!auth.empty()) ctx.AddMetadata("authorization", auth);
    v1::GenerateResponse u;
    grpc::Status st = stub->Generate(&ctx, Request("secret", 4), &u);
    EXPECT_EQ(st.ok(), auth == "Bearer " + token) << st.error_message();
    EXPECT_EQ(st.error_message().find(token), std::string::npos);
  }
  EXPECT_EQ(Stop(s), 0);
  EXPECT_EQ(s.proc.err.find(token), std::string::npos) << s.proc.err;
  const std::string key = pki.Read("server.key");
  std::istringstream lines(key);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > 20) {
      EXPECT_EQ(s.proc.err.find(line), std::string::npos) << "a line of the TLS key is in the log";
    }
  }
  EXPECT_EQ(s.proc.err.find("PRIVATE KEY"), std::string::npos);
}

}  // namespace
}  // namespace modserve
