// Test helpers: a whole ServerApp on loopback with a FakeEngine behind it
// (torch-free: starts at once, builds fast under sanitizers).
//
// Thread-safety: StartFake from the test's thread; the server is thread-safe.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>

#include "fake_engine.h"
#include "grpc_test_util.h"
#include "server/server_app.h"

namespace modserve::testing {

struct FakeServer {
  FakeEngine* engine = nullptr;  // owned by the app
  std::unique_ptr<ServerApp> app;
  std::string address() const { return "127.0.0.1:" + std::to_string(app->grpc_port()); }
};

// A loopback config: gRPC and metrics on free ports.
inline ServerConfig LoopbackConfig() {
  ServerConfig cfg;
  cfg.listen = "127.0.0.1:0";
  cfg.metrics_listen = "127.0.0.1:0";
  return cfg;
}

// Starts `cfg` with a FakeEngine of `kv_blocks` blocks of 4 tokens whose
// steps take `step_delay` (and that `setup`, if given, sets up further before
// the server sees it). On failure, `status` (if given) gets the error
// and the app is null; without `status` a failure fails the test.
inline FakeServer StartFake(const ServerConfig& cfg, int64_t kv_blocks, std::chrono::microseconds step_delay,
                            Status* status = nullptr, const std::function<void(FakeEngine*)>& setup = nullptr) {
  FakeServer s;
  auto app = ServerApp::Start(cfg, [&](const ServerConfig&) -> StatusOr<LoadedEngine> {
    auto e = std::make_unique<FakeEngine>(kv_blocks, 4);
    e->step_delay = step_delay;
    e->record_steps = false;
    if (setup) setup(e.get());
    s.engine = e.get();
    LoadedEngine loaded;
    loaded.model.n_layers = 3;
    loaded.model.routed_layers = {1};
    loaded.model.capacity = 0.5;
    loaded.engine = std::move(e);
    return loaded;
  });
  if (status != nullptr) {
    *status = app.ok() ? Status::Ok() : app.status();
  } else {
    EXPECT_TRUE(app.ok()) << app.status().ToString();
  }
  if (app.ok()) s.app = std::move(*app);
  return s;
}

}  // namespace modserve::testing
