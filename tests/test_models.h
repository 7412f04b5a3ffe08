// Small model configurations and helpers shared by the engine tests.
#pragma once

#include <filesystem>
#include <string>

#include "engine/model_config.h"

namespace modserve::testing {

// A tiny MoD model: 4 layers (1 and 3 routed), d_model 32, context 64.
inline ModelConfig TinyConfig(bool routed = true) {
  ModelConfig c;
  c.n_layers = 4;
  c.d_model = 32;
  c.n_heads = 4;
  c.d_ff = 64;
  c.max_context = 64;
  c.capacity = 0.25;
  c.routing_enabled = routed;
  c.routed_layers = routed ? std::vector<int64_t>{1, 3} : std::vector<int64_t>{};
  c.predictor_hidden = 16;
  return c;
}

// A fresh, empty temporary directory named after the test.
inline std::string TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("modserve_test_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace modserve::testing
