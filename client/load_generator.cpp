#include "client/load_generator.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "client/grpc_code_name.h"
#include "modserve/v1/modserve.grpc.pb.h"

namespace modserve {
namespace {

using SteadyClock = std::chrono::steady_clock;

double Since(SteadyClock::time_point a, SteadyClock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Prompts cut from a fixed English passage, each starting at a different word.
std::string MakePrompt(int64_t i, int64_t bytes) {
  static const std::string text =
      "The jury further said in term-end presentments that the City Executive Committee, which had over-all "
      "charge of the election, deserves the praise and thanks of the City of Atlanta for the manner in which "
      "the election was conducted. It recommended that Fulton legislators act to have these laws studied and "
      "revised to the end of modernizing and improving them. ";
  std::string out;
  size_t start = static_cast<size_t>(i * 37) % text.size();
  while (static_cast<int64_t>(out.size()) < bytes) {
    out += text.substr(start);
    start = 0;
  }
  out.resize(static_cast<size_t>(bytes));
  return out;
}

struct ThreadResult {
  int64_t succeeded = 0, output_tokens = 0;
  std::map<std::string, int64_t> errors;
  LatencyStats ttft, tpot, itl, e2e;
};

}  // namespace

LoadReport RunLoad(const ClientConnection& connection, const LoadOptions& o) {
  auto stub = v1::Generator::NewStub(connection.channel());

  // Arrival times (seconds from the start): all at 0 in closed loop.
  std::vector<double> arrival(static_cast<size_t>(o.requests), 0.0);
  if (o.rate > 0) {
    std::mt19937_64 rng(o.seed);
    std::exponential_distribution<double> gap(o.rate);
    double t = 0;
    for (auto& a : arrival) a = (t += gap(rng));
  }

  std::atomic<int64_t> next{0};
  std::vector<ThreadResult> results(static_cast<size_t>(o.concurrency));
  const auto start = SteadyClock::now();
  std::vector<std::thread> workers;
  for (int64_t w = 0; w < o.concurrency; ++w) {
    workers.emplace_back([&, w] {
      ThreadResult& r = results[static_cast<size_t>(w)];
      for (int64_t i = next++; i < o.requests; i = next++) {
        std::this_thread::sleep_until(start + std::chrono::duration_cast<SteadyClock::duration>(
                                                  std::chrono::duration<double>(arrival[static_cast<size_t>(i)])));
        v1::GenerateRequest req;
        req.set_prompt(MakePrompt(i, o.prompt_bytes));
        req.set_max_tokens(static_cast<int32_t>(o.max_tokens));
        req.set_temperature(static_cast<float>(o.temperature));
        req.set_seed(o.seed + static_cast<uint64_t>(i));
        grpc::ClientContext ctx;
        connection.Prepare(&ctx, o.timeout_seconds);
        const auto t0 = SteadyClock::now();
        auto reader = stub->GenerateStream(&ctx, req);
        v1::GenerateResponse msg;
        int64_t tokens = 0;
        SteadyClock::time_point first, last;
        while (reader->Read(&msg)) {
          if (msg.token_ids_size() == 0) continue;
          const auto now = SteadyClock::now();
          if (tokens == 0) {
            first = now;
          } else {
            r.itl.Add(Since(last, now) / msg.token_ids_size());
          }
          last = now;
          tokens += msg.token_ids_size();
        }
        grpc::Status s = reader->Finish();
        const auto t1 = SteadyClock::now();
        if (!s.ok()) {
          ++r.errors[GrpcCodeName(s.error_code())];
          continue;
        }
        ++r.succeeded;
        r.output_tokens += tokens;
        r.e2e.Add(Since(t0, t1));
        if (tokens > 0) r.ttft.Add(Since(t0, first));
        if (tokens > 1) r.tpot.Add(Since(first, last) / static_cast<double>(tokens - 1));
      }
    });
  }
  for (auto& t : workers) t.join();

  LoadReport rep;
  rep.requests = o.requests;
  rep.seconds = Since(start, SteadyClock::now());
  for (auto& r : results) {
    rep.succeeded += r.succeeded;
    rep.output_tokens += r.output_tokens;
    for (const auto& [code, n] : r.errors) rep.errors[code] += n;
    rep.ttft.Merge(r.ttft);
    rep.tpot.Merge(r.tpot);
    rep.itl.Merge(r.itl);
    rep.e2e.Merge(r.e2e);
  }
  return rep;
}

std::string LoadReport::ToText() {
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(2);
  o << "requests: " << succeeded << " ok of " << requests << " in " << seconds << " s\n";
  for (const auto& [code, n] : errors) o << "errors " << code << ": " << n << "\n";
  o << "request throughput: " << succeeded / seconds << " req/s\n";
  o << "output tokens/s: " << output_tokens / seconds << " (" << output_tokens << " tokens)\n";
  auto line = [&](const char* name, LatencyStats& s) {
    o << name << " ms: mean " << s.Mean() * 1e3 << "  p50 " << s.Percentile(50) * 1e3 << "  p90 "
      << s.Percentile(90) * 1e3 << "  p99 " << s.Percentile(99) * 1e3 << "\n";
  };
  line("time to first token", ttft);
  line("time per output token", tpot);
  line("inter-token latency", itl);
  line("end-to-end latency", e2e);
  return o.str();
}

std::string LoadReport::ToJson() {
  auto stats = [](LatencyStats& s) {
    return nlohmann::json{{"mean", s.Mean()}, {"p50", s.Percentile(50)}, {"p90", s.Percentile(90)}, {"p99", s.Percentile(99)}, {"count", s.count()}};
  };
  nlohmann::json j = {{"requests", requests},
                      {"succeeded", succeeded},
                      {"errors", errors},
                      {"seconds", seconds},
                      {"request_throughput", succeeded / seconds},
                      {"output_tokens", output_tokens},
                      {"output_tokens_per_second", output_tokens / seconds},
                      {"ttft_seconds", stats(ttft)},
                      {"tpot_seconds", stats(tpot)},
                      {"itl_seconds", stats(itl)},
                      {"e2e_seconds", stats(e2e)}};
  return j.dump(2);
}

}  // namespace modserve
