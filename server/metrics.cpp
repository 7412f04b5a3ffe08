#include "server/metrics.h"

#include "server/metrics_http_server.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <map>

namespace modserve {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

struct ServerMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<MetricsHttpServer> http;

  struct LayerCounters {
    Counter* computed = nullptr;
    Counter* skipped = nullptr;
    Gauge* agreement = nullptr;  // added with the first prompt chunk that measures it (no 0 before data)
    Counter* agreement_tokens = nullptr;   // the ratio's terms (whole numbers, exact as doubles)
    Counter* agreement_matches = nullptr;
    std::vector<Counter*> experts;  // MoDE: one per expert
    Counter* noop = nullptr;        // integrated MoDE
  };
  std::map<int64_t, LayerCounters> layers;  // by layer index; set before steps run
  Family<Counter>* layer_tokens = nullptr;
  Family<Gauge>* agreement = nullptr;
  Family<Counter>* agreement_tokens = nullptr;
  Family<Counter>* agreement_matches = nullptr;
  Family<Counter>* expert_tokens = nullptr;

  Family<Counter>* requests = nullptr;
  Counter* prompt_tokens = nullptr;
  Counter* generated_tokens = nullptr;
  Counter* preemptions = nullptr;
  Counter* priority_preemptions = nullptr;
  Counter* prefix_queries = nullptr;
  Counter* prefix_hits = nullptr;
  Gauge* queue = nullptr;
  Gauge* running = nullptr;
  Gauge* kv_usage = nullptr;
  Gauge* prefix_usage = nullptr;
  Histogram* ttft = nullptr;
  Histogram* itl = nullptr;
  Histogram* duration = nullptr;
  Histogram* batch_tokens = nullptr;
  Family<Histogram>* step_seconds = nullptr;
  Family<Gauge>* capacity = nullptr;
  Histogram* decode_step = nullptr;
  Histogram* mixed_step = nullptr;
  Family<Counter>* tokenization = nullptr;
  Counter* guide_hits = nullptr;
  Counter* guide_misses = nullptr;
  Gauge* guide_bytes = nullptr;
  Histogram* guide_compile = nullptr;
};

ServerMetrics::ServerMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ServerMetrics::~ServerMetrics() = default;

StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Start(const std::string& address) {
  auto m = std::make_unique<Impl>();
  auto& reg = *m->registry;
  m->layer_tokens = &prometheus::BuildCounter()
                           .Name("modserve_layer_tokens_total")
                           .Help("Tokens per routed layer that computed the layer or skipped it (skip rate = skipped / all)")
                           .Register(reg);
  m->expert_tokens = &prometheus::BuildCounter()
                            .Name("modserve_expert_tokens_total")
                            .Help("MoDE: tokens each MLP expert of a routed layer ran (expert=\"noop\": tokens the integrated "
                                  "router sent to its no-op expert)")
                            .Register(reg);
  m->agreement = &prometheus::BuildGauge()
                        .Name("modserve_predictor_agreement_ratio")
                        .Help("Fraction of prompt tokens (prefill chunks of >= 8 tokens) where the predictor's decision equals top-k routing over the chunk, since start (for a recent window: rate of modserve_predictor_agreement_matches_total / rate of modserve_predictor_agreement_tokens_total)")
                        .Register(reg);
  m->agreement_tokens = &prometheus::BuildCounter()
                               .Name("modserve_predictor_agreement_tokens_total")
                               .Help("Prompt tokens whose predictor decision was compared with top-k routing (prefill chunks of >= 8 tokens)")
                               .Register(reg);
  m->agreement_matches = &prometheus::BuildCounter()
                                .Name("modserve_predictor_agreement_matches_total")
                                .Help("Of modserve_predictor_agreement_tokens_total, those where the predictor agreed with top-k")
                                .Register(reg);
  m->requests = &prometheus::BuildCounter()
                     .Name("modserve_requests_total")
                     .Help("Requests that ended, by finish reason (length, eos, stop; none if it failed) and gRPC code")
                     .Register(reg);
  m->prompt_tokens = &prometheus::BuildCounter().Name("modserve_prompt_tokens_total").Help("Prompt tokens of requests that ended (BOS included)").Register(reg).Add({});
  m->generated_tokens = &prometheus::BuildCounter().Name("modserve_generated_tokens_total").Help("Tokens generated").Register(reg).Add({});
  m->preemptions = &prometheus::BuildCounter().Name("modserve_preemptions_total").Help("Requests preempted for KV memory (recomputed later)").Register(reg).Add({});
  m->priority_preemptions = &prometheus::BuildCounter()
                                 .Name("modserve_priority_preemptions_total")
                                 .Help("Requests preempted for a waiting request of higher priority (recomputed later)")
                                 .Register(reg)
                                 .Add({});
  m->prefix_queries = &prometheus::BuildCounter()
                           .Name("modserve_prefix_cache_queries_total")
                           .Help("Tokens looked up in the prefix cache as requests entered the engine (once per request)")
                           .Register(reg)
                           .Add({});
  m->prefix_hits = &prometheus::BuildCounter()
                        .Name("modserve_prefix_cache_hits_total")
                        .Help("Tokens of those lookups whose K/V the prefix cache held (hit rate = hits / queries)")
                        .Register(reg)
                        .Add({});
  m->prefix_usage = &prometheus::BuildGauge()
                         .Name("modserve_prefix_cache_usage_ratio")
                         .Help("KV blocks only the prefix cache holds / total (free to take: evicted on demand)")
                         .Register(reg)
                         .Add({});
  m->queue = &prometheus::BuildGauge().Name("modserve_queue_requests").Help("Requests waiting to be admitted").Register(reg).Add({});
  m->running = &prometheus::BuildGauge().Name("modserve_running_requests").Help("Requests in the engine").Register(reg).Add({});
  m->kv_usage = &prometheus::BuildGauge().Name("modserve_kv_cache_usage_ratio").Help("Used / total KV cache blocks (blocks only the prefix cache holds count as free)").Register(reg).Add({});
  // Buckets span CPU (tens of ms per step) and GPU (sub-millisecond) latencies.
  const Histogram::BucketBoundaries latency = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  const Histogram::BucketBoundaries request = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  // TTFT includes the time queued behind others: under load it can run to minutes.
  Histogram::BucketBoundaries first_token = latency;
  first_token.insert(first_token.end(), {30, 60, 120});
  m->ttft = &prometheus::BuildHistogram().Name("modserve_time_to_first_token_seconds").Help("From arrival to the first generated token").Register(reg).Add({}, first_token);
  m->itl = &prometheus::BuildHistogram().Name("modserve_inter_token_latency_seconds").Help("Between consecutive generated tokens of a request").Register(reg).Add({}, latency);
  m->duration = &prometheus::BuildHistogram().Name("modserve_request_duration_seconds").Help("From arrival to the end of a request").Register(reg).Add({}, request);
  m->batch_tokens = &prometheus::BuildHistogram()
                         .Name("modserve_batch_tokens")
                         .Help("Tokens per engine step (decode tokens + prefill chunks)")
                         .Register(reg)
                         .Add({}, Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096});
  m->capacity = &prometheus::BuildGauge()
                     .Name("modserve_layer_capacity")
                     .Help("The model's capacity per routed layer: the fraction of tokens top-k routing sends through it (expected skip rate = 1 - capacity)")
                     .Register(reg);
  m->step_seconds = &prometheus::BuildHistogram()
                         .Name("modserve_engine_step_seconds")
                         .Help("Time of one engine step, by kind: decode (one token per sequence) or mixed (with prefill chunks)")
                         .Register(reg);
  m->decode_step = &m->step_seconds->Add({{"kind", "decode"}}, latency);
  m->mixed_step = &m->step_seconds->Add({{"kind", "mixed"}}, latency);
  m->tokenization = &prometheus::BuildCounter()
                         .Name("modserve_tokenization_requests_total")
                         .Help("Tokenize and Detokenize calls that ended, by rpc and gRPC code")
                         .Register(reg);
  auto& guide_lookups = prometheus::BuildCounter()
                            .Name("modserve_guide_cache_lookups_total")
                            .Help("Guided requests by whether their compiled guide (or its refusal) was in the guide cache")
                            .Register(reg);
  m->guide_hits = &guide_lookups.Add({{"result", "hit"}});
  m->guide_misses = &guide_lookups.Add({{"result", "miss"}});
  m->guide_bytes = &prometheus::BuildGauge()
                        .Name("modserve_guide_cache_bytes")
                        .Help("Bytes of the compiled guides the guide cache keeps (guide_cache_mb bounds it)")
                        .Register(reg)
                        .Add({});
  m->guide_compile = &prometheus::BuildHistogram()
                          .Name("modserve_guide_compile_seconds")
                          .Help("Time to compile a guide not in the cache (on the gRPC thread, before the request is queued)")
                          .Register(reg)
                          .Add({}, latency);
  std::shared_ptr<prometheus::Registry> registry = m->registry;
  auto http = MetricsHttpServer::Start(address, [registry] { return prometheus::TextSerializer().Serialize(registry->Collect()); });
  if (!http.ok()) return http.status();
  m->http = std::move(*http);
  return std::make_unique<ServerMetrics>(std::move(m));
}

void ServerMetrics::SetRoutedLayers(const std::vector<int64_t>& routed_layers, double capacity, int64_t experts,
                                    bool noop_expert) {
  for (int64_t l : routed_layers) {
    const std::string layer = std::to_string(l);
    impl_->capacity->Add({{"layer", layer}}).Set(capacity);
    Impl::LayerCounters lc;
    lc.computed = &impl_->layer_tokens->Add({{"layer", layer}, {"decision", "computed"}});
    lc.skipped = &impl_->layer_tokens->Add({{"layer", layer}, {"decision", "skipped"}});
    lc.agreement_tokens = &impl_->agreement_tokens->Add({{"layer", layer}});
    lc.agreement_matches = &impl_->agreement_matches->Add({{"layer", layer}});
    for (int64_t e = 0; e < experts; ++e) {
      lc.experts.push_back(&impl_->expert_tokens->Add({{"layer", layer}, {"expert", std::to_string(e)}}));
    }
    if (noop_expert) lc.noop = &impl_->expert_tokens->Add({{"layer", layer}, {"expert", "noop"}});
    impl_->layers[l] = lc;
  }
}

int ServerMetrics::port() const {
  return impl_->http->port();
}

void ServerMetrics::CountRejected(StatusCode code) {
  impl_->requests->Add({{"finish_reason", "none"}, {"code", StatusCodeName(code)}}).Increment();
}

void ServerMetrics::OnQueueChanged(int64_t waiting, int64_t running) {
  impl_->queue->Set(static_cast<double>(waiting));
  impl_->running->Set(static_cast<double>(running));
}

void ServerMetrics::OnStep(const StepReport& r) {
  for (const auto& ls : r.stats->layers) {
    auto it = impl_->layers.find(ls.layer);
    if (!ls.routed || it == impl_->layers.end()) continue;
    auto& lc = it->second;
    lc.computed->Increment(static_cast<double>(ls.computed));
    lc.skipped->Increment(static_cast<double>(ls.skipped));
    for (size_t e = 0; e < ls.expert_tokens.size() && e < lc.experts.size(); ++e) {
      lc.experts[e]->Increment(static_cast<double>(ls.expert_tokens[e]));
    }
    if (lc.noop != nullptr) lc.noop->Increment(static_cast<double>(ls.skipped));
    if (ls.agreement_tokens > 0) {
      lc.agreement_tokens->Increment(static_cast<double>(ls.agreement_tokens));
      lc.agreement_matches->Increment(static_cast<double>(ls.agreement_matches));
      if (lc.agreement == nullptr) lc.agreement = &impl_->agreement->Add({{"layer", std::to_string(ls.layer)}});
      lc.agreement->Set(lc.agreement_matches->Value() / lc.agreement_tokens->Value());
    }
  }
  impl_->batch_tokens->Observe(static_cast<double>(r.batch_tokens));
  (r.decode_only ? impl_->decode_step : impl_->mixed_step)->Observe(r.engine_seconds);
}

void ServerMetrics::OnKvUsage(double ratio) { impl_->kv_usage->Set(ratio); }

void ServerMetrics::OnPreempted(bool for_priority) {
  (for_priority ? impl_->priority_preemptions : impl_->preemptions)->Increment();
}
void ServerMetrics::OnPrefixCacheUsage(double ratio) { impl_->prefix_usage->Set(ratio); }

void ServerMetrics::OnPrefixLookup(int64_t queried, int64_t hit) {
  impl_->prefix_queries->Increment(static_cast<double>(queried));
  impl_->prefix_hits->Increment(static_cast<double>(hit));
}

void ServerMetrics::CountTokenization(const std::string& rpc, StatusCode code) {
  impl_->tokenization->Add({{"rpc", rpc}, {"code", StatusCodeName(code)}}).Increment();
}

void ServerMetrics::OnGuideLookup(bool hit, double compile_seconds, int64_t cached_bytes) {
  (hit ? impl_->guide_hits : impl_->guide_misses)->Increment();
  if (!hit) impl_->guide_compile->Observe(compile_seconds);
  impl_->guide_bytes->Set(static_cast<double>(cached_bytes));
}

void ServerMetrics::OnFirstToken(double seconds) { impl_->ttft->Observe(seconds); }
void ServerMetrics::OnInterToken(double seconds) { impl_->itl->Observe(seconds); }

void ServerMetrics::OnRequestDone(FinishReason reason, StatusCode code, double seconds, int64_t prompt_tokens,
                                  int64_t generated_tokens) {
  impl_->requests->Add({{"finish_reason", FinishReasonName(reason)}, {"code", StatusCodeName(code)}}).Increment();
  impl_->duration->Observe(seconds);
  impl_->prompt_tokens->Increment(static_cast<double>(prompt_tokens));
  impl_->generated_tokens->Increment(static_cast<double>(generated_tokens));
}

}  // namespace modserve
