// ServerApp: a whole mod-server in one object: metrics endpoint, gRPC server
// (Generator, grpc.health.v1, reflection), the engine, the scheduler and the
// step-loop thread that drives it. main() and the end-to-end tests use it.
//
// Start() listens first (health NOT_SERVING, Generate UNAVAILABLE), loads the
// engine through an EngineLoader, then serves (health SERVING). Drain() is
// the SIGTERM path. This file is torch-free: LoadLibTorchEngine
// (engine_loader.h) loads the real engine; tests can load a fake one.
//
// Thread-safety: Start, Drain and the destructor from one thread; the ports,
// ReopenLogs and CutGrace from any.
#pragma once

#include <chrono>
#include <memory>

#include <functional>

#include "engine/model_config.h"
#include "engine/status.h"
#include "server/server_config.h"
#include "server/step_engine.h"

namespace modserve {

// An engine ready to serve, and the model it runs.
struct LoadedEngine {
  std::unique_ptr<StepEngine> engine;
  ModelConfig model;
};
using EngineLoader = std::function<StatusOr<LoadedEngine>(const ServerConfig&)>;

class ServerApp {
 public:
  struct Impl;
  // `before_serving`, if set, runs once the engine is loaded, before any
  // request can be accepted (main uses it to stop exiting at once on SIGTERM).
  static StatusOr<std::unique_ptr<ServerApp>> Start(const ServerConfig& config, const EngineLoader& load,
                                                    const std::function<void()>& before_serving = nullptr);
  explicit ServerApp(std::unique_ptr<Impl> impl);
  ~ServerApp();  // drains with no grace if Drain was not called

  int grpc_port() const;
  int metrics_port() const;

  // Health NOT_SERVING and new requests UNAVAILABLE; in-flight requests get up
  // to `grace` to finish, the rest end with UNAVAILABLE; then everything stops.
  void Drain(std::chrono::duration<double> grace) {
    BeginDrain();
    FinishDrain(grace);
  }
  // The two halves of Drain: stop admitting (returns at once) ...
  void BeginDrain();
  // ... then wait for in-flight requests and stop.
  void FinishDrain(std::chrono::duration<double> grace);
  // From any thread, during FinishDrain: stop waiting now, as if the grace
  // period were over (the second SIGTERM/SIGINT).
  void CutGrace();
  // SIGHUP: the request log (a file) opens its path again (RequestLog::Reopen).
  Status ReopenLogs();

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace modserve
