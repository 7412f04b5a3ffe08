// Construction of an Engine from an in-memory model (tests, benchmarks).
//
// Thread-safety: see Engine.
#pragma once

#include <memory>

#include "engine/engine.h"
#include "engine/mod_model.h"

namespace modserve {

StatusOr<std::unique_ptr<Engine>> CreateEngine(MoDTransformer model, const EngineOptions& opts);

}  // namespace modserve
