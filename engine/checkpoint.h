// Checkpoint: a model directory holding config.json (architecture, routing,
// tokenizer, training provenance) and model.safetensors.
//
// Loading builds the model from the config and requires the file to hold
// exactly the model's tensors, each with the config's shape and dtype, all
// finite; any mismatch is an error naming the file and the tensor. A config
// that implies more than twice the file's parameters (a typo'd width, say) is
// refused before the model is built, naming both counts. Saving is
// atomic per file and round-trips bit-exactly (f32; bf16 round-trips the bf16
// values).
//
// Thread-safety: free functions with no shared state.
#pragma once

#include <string>

#include "engine/mod_model.h"
#include "engine/status.h"

namespace modserve {

StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);
StatusOr<MoDTransformer> LoadCheckpoint(const std::string& dir);
// Writes config.json (from model->config()) and model.safetensors into `dir`, creating it.
Status SaveCheckpoint(MoDTransformer& model, const std::string& dir);

}  // namespace modserve
