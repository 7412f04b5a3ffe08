#include "server/server_app.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <thread>

#include "engine/thread_priority.h"

#include "server/generator_service.h"
#include "server/request_validation.h"
#include "server/transport_security.h"

#ifndef MODSERVE_VERSION
#define MODSERVE_VERSION "dev"
#endif

namespace modserve {

// Declared so that destruction runs from the outside in: the gRPC server
// (and with it every reactor callback) goes first, then the service, the
// scheduler, the engine and the metrics they report to.
struct ServerApp::Impl {
  ServerConfig cfg;
  std::unique_ptr<RequestLog> request_log;  // written by reactors: outlives them
  std::unique_ptr<ServerMetrics> metrics;
  std::unique_ptr<StepEngine> engine;
  std::unique_ptr<Scheduler> scheduler;
  GeneratorService service;
  std::unique_ptr<grpc::Server> server;
  int grpc_port = 0;
  std::thread loop;
  std::atomic<bool> stop{false};
  std::atomic<bool> grace_cut{false};  // CutGrace: the drain stops waiting
  bool draining = false;
  bool drained = false;

  void SetServing(bool serving) { server->GetHealthCheckService()->SetServingStatus(serving); }
};

namespace {

ServedModel DescribeModel(const ServerConfig& cfg, const ModelConfig& mc, const StepEngineInfo& info,
                          ServerMetrics* metrics) {
  ServedModel m;
  m.validation.limits = cfg.limits;
  // A request's n completions are queued together: never more than the queue holds.
  m.validation.limits.max_n = std::min(cfg.limits.max_n, cfg.max_queue);
  m.validation.max_context = mc.max_context;
  m.validation.vocab_size = mc.vocab_size;
  m.validation.bos_id = mc.bos_id;
  m.validation.eos_id = mc.eos_id;
  m.validation.priority_scheduling = cfg.scheduling_policy == "priority";
  m.validation.guide_cache = std::make_shared<GuideCache>(
      cfg.guide_cache_mb << 20, [metrics](bool hit, double seconds, int64_t bytes) { metrics->OnGuideLookup(hit, seconds, bytes); });
  m.routed_layers = info.routed_layers;
  v1::ModelInfo& p = m.info;
  p.set_architecture("mod-transformer");
  p.set_n_layers(static_cast<int32_t>(mc.n_layers));
  p.set_d_model(static_cast<int32_t>(mc.d_model));
  p.set_n_heads(static_cast<int32_t>(mc.n_heads));
  p.set_vocab_size(static_cast<int32_t>(mc.vocab_size));
  p.set_context_length(static_cast<int32_t>(mc.max_context));
  p.set_routing_enabled(mc.routing_enabled);
  p.set_mode(mc.routing_enabled ? mc.mode : "dense");
  p.set_experts(static_cast<int32_t>(mc.routing_enabled ? mc.moe_experts : 0));
  p.set_expert_top_k(static_cast<int32_t>(mc.routing_enabled && mc.mode != "mod" ? mc.moe_top_k : 0));
  p.set_capacity(mc.routing_enabled ? mc.capacity : 1.0);
  for (int64_t l : info.routed_layers) p.add_routed_layers(static_cast<int32_t>(l));
  p.set_model_path(cfg.model);
  p.set_server_version(MODSERVE_VERSION);
  p.set_dtype(cfg.dtype);
  p.set_device(cfg.device);
  p.set_prefix_caching(info.prefix_caching);
  p.set_kv_block_size(static_cast<int32_t>(info.block_size));
  p.set_kv_blocks(info.total_blocks);
  p.set_scheduling_policy(cfg.scheduling_policy);
  auto* lim = p.mutable_limits();
  lim->set_max_prompt_bytes(static_cast<int32_t>(cfg.limits.max_prompt_bytes));
  lim->set_max_tokens(static_cast<int32_t>(cfg.limits.max_tokens));
  lim->set_default_max_tokens(static_cast<int32_t>(cfg.limits.default_max_tokens));
  lim->set_max_stop(static_cast<int32_t>(cfg.limits.max_stop));
  lim->set_max_stop_bytes(static_cast<int32_t>(cfg.limits.max_stop_bytes));
  lim->set_max_n(static_cast<int32_t>(m.validation.limits.max_n));
  lim->set_max_top_logprobs(static_cast<int32_t>(MaxTopLogprobs(mc.vocab_size)));
  return m;
}

}  // namespace

ServerApp::ServerApp(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ServerApp::~ServerApp() {
  if (impl_ && !impl_->drained) Drain(std::chrono::seconds(0));
}

int ServerApp::grpc_port() const { return impl_->grpc_port; }
int ServerApp::metrics_port() const { return impl_->metrics->port(); }

StatusOr<std::unique_ptr<ServerApp>> ServerApp::Start(const ServerConfig& cfg, const EngineLoader& load,
                                                      const std::function<void()>& before_serving) {
  MODSERVE_RETURN_IF_ERROR(cfg.Validate());
  // Secrets first: a bad key or token file stops the start before anything listens.
  auto credentials = MakeServerCredentials(cfg);
  if (!credentials.ok()) return credentials.status();
  auto impl = std::make_unique<Impl>();
  impl->cfg = cfg;
  if (!cfg.auth_token_file.empty()) {
    auto auth = BearerAuth::FromFile(cfg.auth_token_file);
    if (!auth.ok()) return auth.status();
    impl->service.SetAuth(std::move(*auth));
  }
  if (!cfg.request_log.empty()) {
    auto log = RequestLog::Open(cfg.request_log);
    if (!log.ok()) return log.status();
    impl->request_log = std::move(*log);
    impl->service.SetRequestLog(impl->request_log.get());
  }
  auto metrics = ServerMetrics::Start(cfg.metrics_listen);
  if (!metrics.ok()) return metrics.status();
  impl->metrics = std::move(*metrics);

  // Listen first, so health checks see NOT_SERVING while the model loads.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(cfg.listen, *credentials, &impl->grpc_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(cfg.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, static_cast<int>(cfg.max_concurrent_streams));
  builder.RegisterService(&impl->service);
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->grpc_port == 0) {
    return Unavailable("listen: cannot listen on " + cfg.listen +
                       (cfg.tls() ? " (with TLS: are tls_cert_file and tls_key_file a certificate and its key?)" : ""));
  }
  impl->SetServing(false);

  auto fail = [&](Status s) {
    impl->server->Shutdown(std::chrono::system_clock::now());
    return s;
  };
  auto loaded = load(cfg);
  if (!loaded.ok()) return fail(loaded.status());
  const ModelConfig model_config = loaded->model;
  // The largest valid request for this model (its vocabulary sizes the id fields) must fit in a message.
  const int64_t largest_request = LargestValidRequestBytes(cfg.limits, model_config.vocab_size);
  if (cfg.max_message_bytes < largest_request) {
    return fail(InvalidArgument(
        "max_message_bytes (" + std::to_string(cfg.max_message_bytes) + ") is too small for the largest valid request " +
        "under max_prompt_bytes, max_stop and max_stop_bytes, with the longest guide and stop_token_ids and logit_bias entries for each of the " +
        "model's " + std::to_string(model_config.vocab_size) + " token ids; it must be at least " +
        std::to_string(largest_request)));
  }
  impl->engine = std::move(loaded->engine);
  const StepEngineInfo info = impl->engine->Info();

  impl->metrics->SetRoutedLayers(info.routed_layers, info.capacity, info.experts, info.noop_expert);

  SchedulerOptions so;
  so.max_queue = cfg.max_queue;
  so.max_running = cfg.max_running;
  so.max_batch_tokens = cfg.max_batch_tokens;
  so.max_prefill_tokens = cfg.max_prefill_tokens;
  impl->scheduler = std::make_unique<Scheduler>(impl->engine.get(), so, impl->metrics.get());
  Impl* raw = impl.get();
  std::promise<void> marked;
  impl->loop = std::thread([raw, &marked] {
    MarkComputeThread();  // the engine's steps run here: spared by LowerOtherThreadsToIdle
    marked.set_value();
    while (!raw->stop.load()) {
      if (!raw->scheduler->Step()) raw->scheduler->WaitForWork(std::chrono::milliseconds(50));
    }
  });
  marked.get_future().wait();
  if (before_serving) before_serving();
  impl->service.Attach(impl->scheduler.get(), DescribeModel(cfg, model_config, info, impl->metrics.get()), impl->metrics.get());
  impl->SetServing(true);
  return std::make_unique<ServerApp>(std::move(impl));
}

Status ServerApp::ReopenLogs() {
  return impl_->request_log != nullptr ? impl_->request_log->Reopen() : Status::Ok();
}

void ServerApp::BeginDrain() {
  Impl& m = *impl_;
  if (m.draining) return;
  m.draining = true;
  m.SetServing(false);
  m.scheduler->StopAdmitting();
}

void ServerApp::CutGrace() { impl_->grace_cut.store(true); }

void ServerApp::FinishDrain(std::chrono::duration<double> grace) {
  Impl& m = *impl_;
  BeginDrain();
  if (m.drained) return;
  m.drained = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(grace);
  while (!m.scheduler->idle() && !m.grace_cut.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!m.scheduler->idle()) {
    m.scheduler->CancelAll(Unavailable(std::string("the server shut down before the request finished (") +
                                       (m.grace_cut.load() ? "drain cut short by a second stop signal)" : "drain grace period over)")));
    const auto hard = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!m.scheduler->idle() && std::chrono::steady_clock::now() < hard) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  // Every request has had its last update; let the final writes go out:
  // each reactor reaches OnDone once its status is sent. Then close the
  // connections at once. gRPC's own graceful close waits for every client to
  // hang up, and a client that sent a call during the drain (refused) kept
  // it waiting for the whole deadline; health watches and reflection streams
  // would too.
  m.service.WaitForReactors(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  m.server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  m.stop.store(true);
  m.scheduler->Wake();
  m.loop.join();
}

}  // namespace modserve
