// LoadGenerator: mod-client's `bench`: drives a server with up to
// `concurrency` streaming Generate calls in flight, closed-loop or with
// Poisson arrivals at `rate` requests/s, and reports throughput, time to
// first token, time per output token and inter-token latency (with n > 1,
// of each completion: TTFT from the call's start to its first token). Calls run on
// gRPC's callback API, so messages are timed on the gRPC threads that
// receive them and no thread of ours wakes per message: on a machine the
// server shares, the load generator takes as little CPU from it as it can.
// Calls spread over one connection per 100 in flight (a server takes 128 on
// one). With `rate`, a request's latencies count from when it was due, so
// an arrival that waits for one of the `concurrency` slots counts the wait.
//
// Thread-safety: RunLoad is called from one thread at a time; it returns once
// every call it started is done.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "client/connection.h"
#include "engine/latency_stats.h"

namespace modserve {

struct LoadOptions {
  int64_t concurrency = 8;
  int64_t requests = 64;
  double rate = 0;              // requests/s with Poisson arrivals; 0: closed loop
  int64_t prompt_bytes = 64;
  int64_t shared_prefix_bytes = 0;  // the same text before every prompt (a "system prompt")
  int64_t max_tokens = 64;
  double temperature = 0;
  bool ignore_eos = false;      // every request generates max_tokens tokens
  int32_t priority = 0;         // GenerateRequest.priority of every request
  int32_t n = 1;                // GenerateRequest.n: completions per request, each timed as a request of its own
  double timeout_seconds = 120; // deadline of every call
  uint64_t seed = 1;
};

struct LoadReport {
  int64_t requests = 0, succeeded = 0;
  std::map<std::string, int64_t> errors;  // gRPC code name -> count
  int64_t output_tokens = 0;
  double seconds = 0;
  LatencyStats ttft, tpot, itl, e2e;
  std::string ToText();
  std::string ToJson();
};

LoadReport RunLoad(const ClientConnection& connection, const LoadOptions& opts);

}  // namespace modserve
