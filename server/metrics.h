// ServerMetrics: the server's Prometheus metrics (names in README "Metrics";
// dashboards rely on them) and the HTTP endpoint that serves /metrics on its
// own port and thread, never through the inference queue.
//
// It implements SchedulerObserver, so the scheduler reports plain numbers and
// only this file knows Prometheus.
//
// Thread-safety: all methods are thread-safe (prometheus-cpp metrics are).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/status.h"
#include "server/scheduler_observer.h"

namespace modserve {

class ServerMetrics : public SchedulerObserver {
 public:
  struct Impl;
  // Binds `address` (host:port; port 0 picks a free one) and serves /metrics from then on.
  static StatusOr<std::unique_ptr<ServerMetrics>> Start(const std::string& address);
  explicit ServerMetrics(std::unique_ptr<Impl> impl);
  ~ServerMetrics() override;

  int port() const;  // the bound port

  // Creates the per-layer series once the model is known; call before the
  // scheduler starts reporting steps. MoDE: `experts` per routed layer
  // (modserve_expert_tokens_total{layer,expert}), plus expert="noop" when
  // `noop_expert` (integrated MoDE).
  void SetRoutedLayers(const std::vector<int64_t>& routed_layers, double capacity, int64_t experts = 0,
                       bool noop_expert = false);

  // A request refused before it reached the scheduler (invalid, queue full, draining).
  void CountRejected(StatusCode code);

  // A Tokenize or Detokenize call (`rpc`) that ended with `code`.
  void CountTokenization(const std::string& rpc, StatusCode code);

  // A guided request's guide looked up in the guide cache (GuideCache::Observer).
  void OnGuideLookup(bool hit, double compile_seconds, int64_t cached_bytes);

  void OnQueueChanged(int64_t waiting, int64_t running) override;
  void OnStep(const StepReport& report) override;
  void OnKvUsage(double ratio) override;
  void OnPreempted(bool for_priority) override;
  void OnPrefixCacheUsage(double ratio) override;
  void OnPrefixLookup(int64_t queried, int64_t hit) override;
  void OnFirstToken(double seconds) override;
  void OnInterToken(double seconds) override;
  void OnRequestDone(FinishReason reason, StatusCode code, double seconds, int64_t prompt_tokens,
                     int64_t generated_tokens) override;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace modserve
