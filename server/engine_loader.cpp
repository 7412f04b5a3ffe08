#include "server/engine_loader.h"

#include <filesystem>

#include "server/engine_adapter.h"

namespace modserve {

StatusOr<LoadedEngine> LoadLibTorchEngine(const ServerConfig& cfg) {
  if (!std::filesystem::is_directory(cfg.model)) {
    return NotFound("model: " + cfg.model + " is not a checkpoint directory");
  }
  EngineOptions eo;
  eo.kv_blocks = cfg.kv_blocks;
  eo.block_size = cfg.block_size;
  eo.device = cfg.device;
  eo.dtype = cfg.dtype;
  eo.kv_dtype = cfg.kv_dtype;
  eo.prefix_caching = cfg.prefix_caching;
  // By default the engine's own kernels use every core (threads 0: the
  // engine's own default; they share work dynamically, so a core taken by
  // gRPC for a moment does not stall them), while LibTorch's statically split
  // ops leave one core to gRPC: on 2 cores this served about 40% more tokens/s
  // than 1 engine thread at a shorter p99 inter-token latency, and 2 torch
  // threads served fewer (measured with mod-client bench, README "Serving
  // benchmark"). With one LibTorch thread the kernels run on their own pool,
  // whose idle workers sleep quickly (engine/parallel_chunks.h).
  eo.threads = static_cast<int>(cfg.threads);
  eo.torch_threads = cfg.EngineTorchThreads();
  auto engine = Engine::Load(cfg.model, eo);
  if (!engine.ok()) return engine.status();
  LoadedEngine loaded;
  loaded.model = (*engine)->config();
  loaded.engine = std::make_unique<EngineAdapter>(std::move(*engine));
  return loaded;
}

}  // namespace modserve
