// LoadLibTorchEngine: the EngineLoader mod-server uses: loads the checkpoint
// directory `config.model` into the LibTorch engine with the configured KV
// pool, device, dtype and threads.
//
// Thread-safety: call from one thread at start-up.
#pragma once

#include "server/server_app.h"

namespace modserve {

StatusOr<LoadedEngine> LoadLibTorchEngine(const ServerConfig& config);

}  // namespace modserve
