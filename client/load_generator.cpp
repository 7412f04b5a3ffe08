#include "client/load_generator.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "proto/grpc_code_name.h"
#include "modserve/v1/modserve.grpc.pb.h"

namespace modserve {
namespace {

using SteadyClock = std::chrono::steady_clock;

double Since(SteadyClock::time_point a, SteadyClock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// `bytes` bytes of an instruction text, repeated as needed: what --shared-prefix-bytes puts before every prompt.
std::string SharedPrefix(int64_t bytes) {
  static const std::string text =
      "You are the court reporter of a city newspaper in 1961. Report what the grand jury said, in plain words, "
      "naming the people and the places, and quoting the presentments where they are short. ";
  std::string out;
  while (static_cast<int64_t>(out.size()) < bytes) out += text;
  out.resize(static_cast<size_t>(bytes));
  return out;
}

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

// What one call or the whole run measured.
struct Results {
  int64_t succeeded = 0, output_tokens = 0;
  std::map<std::string, int64_t> errors;
  LatencyStats ttft, tpot, itl, e2e;

  void Merge(const Results& r) {
    succeeded += r.succeeded;
    output_tokens += r.output_tokens;
    for (const auto& [code, n] : r.errors) errors[code] += n;
    ttft.Merge(r.ttft);
    tpot.Merge(r.tpot);
    itl.Merge(r.itl);
    e2e.Merge(r.e2e);
  }
};

// The calls in flight, and the run's results so far.
struct Tracker {
  std::mutex mu;
  std::condition_variable cv;
  int64_t in_flight = 0;
  Results results;

  // Notifies under the lock: the waiting thread may return and destroy the
  // tracker as soon as it sees in_flight reach 0, so no caller may touch it
  // after unlocking (two calls ending together would otherwise notify a
  // destroyed condition variable).
  void Done(const Results& r) {
    std::lock_guard<std::mutex> lock(mu);
    results.Merge(r);
    --in_flight;
    cv.notify_one();
  }
};

// One streaming Generate call on the callback API: each message is timed on
// the gRPC thread that receives it, with no client thread to wake per
// message, so the load generator takes as little CPU as it can from a server
// on the same machine. Deletes itself when the call is done.
class StreamCall final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  // `t0`: when the request is due (its latencies count from there).
  StreamCall(v1::Generator::Stub* stub, const ClientConnection& connection, const v1::GenerateRequest& req, double timeout,
             SteadyClock::time_point t0, Tracker* tracker)
      : req_(req), tracker_(tracker), t0_(t0) {
    connection.Prepare(&ctx_, timeout);
    stub->async()->GenerateStream(&ctx_, &req_, this);
    StartRead(&msg_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone follows
    if (msg_.token_ids_size() > 0 && msg_.index() >= 0 && msg_.index() < static_cast<int>(completions_.size())) {
      Completion& c = completions_[static_cast<size_t>(msg_.index())];
      const auto now = SteadyClock::now();
      if (c.tokens == 0) {
        c.first = now;
      } else {
        r_.itl.Add(Since(c.last, now) / msg_.token_ids_size());
      }
      c.last = now;
      c.tokens += msg_.token_ids_size();
    }
    StartRead(&msg_);
  }

  void OnDone(const grpc::Status& s) override {
    const auto t1 = SteadyClock::now();
    if (!s.ok()) {
      ++r_.errors[GrpcCodeName(s.error_code())];
    } else {
      ++r_.succeeded;
      r_.e2e.Add(Since(t0_, t1));
      for (const Completion& c : completions_) {  // each completion timed as a request of its own
        r_.output_tokens += c.tokens;
        if (c.tokens > 0) r_.ttft.Add(Since(t0_, c.first));
        if (c.tokens > 1) r_.tpot.Add(Since(c.first, c.last) / static_cast<double>(c.tokens - 1));
      }
    }
    Tracker* tracker = tracker_;
    Results r = std::move(r_);
    delete this;
    tracker->Done(r);
  }

 private:
  grpc::ClientContext ctx_;
  v1::GenerateRequest req_;
  v1::GenerateResponse msg_;
  Tracker* tracker_;
  Results r_;
  struct Completion {
    int64_t tokens = 0;
    SteadyClock::time_point first, last;
  };
  std::vector<Completion> completions_{static_cast<size_t>(std::max(1, req_.n()))};  // per GenerateRequest.n
  SteadyClock::time_point t0_;
};

}  // namespace

LoadReport RunLoad(const ClientConnection& connection, const LoadOptions& o) {
  // One connection per kCallsPerConnection calls in flight: a server takes
  // max_concurrent_streams (128 by default) on one, and calls beyond would
  // wait in the client, their wait counted as the server's latency.
  constexpr int64_t kCallsPerConnection = 100;
  std::vector<std::unique_ptr<v1::Generator::Stub>> stubs;
  stubs.push_back(v1::Generator::NewStub(connection.channel()));
  while (static_cast<int64_t>(stubs.size()) * kCallsPerConnection < o.concurrency) {
    stubs.push_back(v1::Generator::NewStub(connection.NewChannel()));
  }

  // Arrival times (seconds from the start): all at 0 in closed loop.
  std::vector<double> arrival(static_cast<size_t>(o.requests), 0.0);
  if (o.rate > 0) {
    std::mt19937_64 rng(o.seed);
    std::exponential_distribution<double> gap(o.rate);
    double t = 0;
    for (auto& a : arrival) a = (t += gap(rng));
  }

  // Starts request i once it has arrived and fewer than `concurrency` calls
  // are in flight; then waits for the last ones.
  const std::string shared_prefix = SharedPrefix(o.shared_prefix_bytes);
  Tracker tracker;
  const auto start = SteadyClock::now();
  for (int64_t i = 0; i < o.requests; ++i) {
    const auto due = start + std::chrono::duration_cast<SteadyClock::duration>(
                                 std::chrono::duration<double>(arrival[static_cast<size_t>(i)]));
    std::this_thread::sleep_until(due);
    {
      std::unique_lock<std::mutex> lock(tracker.mu);
      tracker.cv.wait(lock, [&] { return tracker.in_flight < o.concurrency; });
      ++tracker.in_flight;
    }
    v1::GenerateRequest req;
    req.set_prompt(shared_prefix + MakePrompt(i, o.prompt_bytes));
    req.set_max_tokens(static_cast<int32_t>(o.max_tokens));
    req.set_ignore_eos(o.ignore_eos);
    req.set_priority(o.priority);
    req.set_n(o.n);
    req.set_temperature(static_cast<float>(o.temperature));
    req.set_seed(o.seed + static_cast<uint64_t>(i));
    // Poisson arrivals are timed from when they were due, so the wait for a
    // free slot counts (no coordinated omission); closed-loop calls from now.
    new StreamCall(stubs[static_cast<size_t>(i) % stubs.size()].get(), connection, req, o.timeout_seconds,
                   o.rate > 0 ? due : SteadyClock::now(), &tracker);
  }
  {
    std::unique_lock<std::mutex> lock(tracker.mu);
    tracker.cv.wait(lock, [&] { return tracker.in_flight == 0; });
  }

  LoadReport rep;
  rep.requests = o.requests;
  rep.seconds = Since(start, SteadyClock::now());
  Results& r = tracker.results;
  rep.succeeded = r.succeeded;
  rep.output_tokens = r.output_tokens;
  rep.errors = r.errors;
  rep.ttft = r.ttft;
  rep.tpot = r.tpot;
  rep.itl = r.itl;
  rep.e2e = r.e2e;
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
    if (s.count() == 0) {  // no sample (e.g. every call failed): no figure, rather than 0 ms
      o << name << " ms: none measured\n";
      return;
    }
    o << name << " ms: mean " << s.Mean() * 1e3 << "  p50 " << s.Percentile(50) * 1e3 << "  p90 "
      << s.Percentile(90) * 1e3 << "  p99 " << s.Percentile(99) * 1e3 << "  (" << s.count() << " samples)\n";
  };
  line("time to first token", ttft);
  line("time per output token", tpot);
  line("inter-token latency", itl);
  line("end-to-end latency", e2e);
  return o.str();
}

std::string LoadReport::ToJson() {
  auto stats = [](LatencyStats& s) {
    if (s.count() == 0) return nlohmann::json{{"count", 0}};  // no figures where nothing was measured
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
