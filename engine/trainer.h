// Trainer: trains a MoD (or, with routing off, dense) model on a byte corpus
// with AdamW, linear warm-up + cosine decay, gradient clipping, periodic
// validation, checkpointing and resume. Seeded and deterministic: the same
// options give the same weights (batches are drawn from an RNG seeded by
// (seed, step), so a resumed run sees the same batches as an uninterrupted one).
//
// Thread-safety: one Train() call owns its model; not reentrant on one out_dir.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "engine/losses.h"
#include "engine/mod_model.h"
#include "engine/status.h"

namespace modserve {

struct TrainOptions {
  std::string train_text;     // UTF-8 text file
  std::string val_text;       // held-out UTF-8 text file (may be empty: no validation)
  std::string out_dir;        // checkpoint directory written at the end (and at each save)
  bool resume = false;        // continue from out_dir's checkpoint and trainer_state.pt

  ModelConfig model;          // architecture and routing of a fresh model

  int64_t steps = 1000;       // total optimizer steps (overridden by train_flops when > 0)
  int64_t stop_at = 0;        // if > 0: stop after this step, saving state to resume from (the schedule still spans all steps)
  double train_flops = 0;     // if > 0: steps = train_flops / (training FLOPs per step)
  int64_t batch = 16;         // sequences per step
  int64_t seq_len = 256;      // bytes per sequence (<= model.max_context)
  double lr = 3e-3;
  double min_lr_ratio = 0.1;
  int64_t warmup = 100;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95;
  double grad_clip = 1.0;
  uint64_t seed = 1234;
  LossWeights loss_weights;

  int64_t eval_every = 250;      // validation every N steps (0: only at the end)
  int64_t eval_max_bytes = 65536;
  int64_t save_every = 0;        // checkpoint + trainer state every N steps (0: only at the end)
  int64_t log_every = 50;        // plain log line every N steps when not on a terminal
  int threads = 0;               // intra-op threads (0: one per hardware thread)
  bool bf16_autocast = true;     // matmuls in bfloat16 (oneDNN), master weights and optimizer in float32
};

struct TrainSummary {
  int64_t steps = 0;
  int64_t tokens = 0;
  double train_flops = 0;          // total training FLOPs (3x forward matmul FLOPs)
  double flops_per_token = 0;      // training FLOPs per token
  double seconds = 0;
  double final_val_bits_per_byte = 0;
};

// Training FLOPs per token: forward + backward (3x the forward matmul FLOPs).
double TrainFlopsPerToken(const ModelConfig& cfg, int64_t seq_len);

// Builds, trains and saves a model per `opts`; returns what it did.
StatusOr<TrainSummary> Train(const TrainOptions& opts);

// One optimizer step's worth of loss on a batch, exposed for tests.
Losses TrainingLosses(MoDTransformer& model, const torch::Tensor& rows, const LossWeights& w);

}  // namespace modserve
