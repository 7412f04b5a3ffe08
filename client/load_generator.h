// LoadGenerator: mod-client's `bench`: drives a server with streaming
// Generate calls from `concurrency` client threads, closed-loop or with
// Poisson arrivals at `rate` requests/s, and reports throughput, time to
// first token, time per output token and inter-token latency.
//
// Thread-safety: Run() is called once, from one thread; it starts and joins
// its own worker threads.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "client/connection.h"
#include "client/latency_stats.h"

namespace modserve {

struct LoadOptions {
  int64_t concurrency = 8;
  int64_t requests = 64;
  double rate = 0;              // requests/s with Poisson arrivals; 0: closed loop
  int64_t prompt_bytes = 64;
  int64_t max_tokens = 64;
  double temperature = 0;
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
