// What the mod-server end-to-end tests share: the shipped model's path, a
// server config on free loopback ports, and starting a ServerApp with the
// LibTorch engine.
//
// Thread-safety: plain functions.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "server/engine_loader.h"
#include "server/server_app.h"

namespace modserve::testing {

inline const std::string kModel = std::string(MODSERVE_SOURCE_DIR) + "/models/mod-small";

inline ServerConfig TestConfig() {
  ServerConfig c;
  c.model = kModel;
  c.listen = "127.0.0.1:0";
  c.metrics_listen = "127.0.0.1:0";
  return c;
}

// The server, or null (and a test failure) if it did not start.
inline std::unique_ptr<ServerApp> StartApp(const ServerConfig& c) {
  auto app = ServerApp::Start(c, LoadLibTorchEngine);
  EXPECT_TRUE(app.ok()) << app.status().ToString();
  return app.ok() ? std::move(*app) : nullptr;
}

}  // namespace modserve::testing
