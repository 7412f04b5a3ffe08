// mod-train: trains a MoD (MoDE, or dense) byte-level model from a text corpus
// and writes a checkpoint directory (config.json + model.safetensors).
#include <cstdio>

#include "engine/flags.h"
#include "engine/trainer.h"

using namespace modserve;

namespace {

Status Run(int argc, char** argv) {
  Flags f("mod-train", "Trains a Mixture-of-Depths (or dense) byte-level language model.");
  f.Define("train", "", "training text file (UTF-8)");
  f.Define("val", "", "held-out validation text file (UTF-8)");
  f.Define("out", "", "checkpoint directory to write");
  f.Define("resume", "false", "continue training the checkpoint in --out from its trainer_state.pt", true);
  f.Define("dense", "false", "train the dense baseline (routing off)", true);
  f.Define("layers", "6", "number of transformer layers");
  f.Define("d-model", "192", "model width");
  f.Define("heads", "6", "attention heads");
  f.Define("d-ff", "768", "MLP hidden width");
  f.Define("max-context", "256", "maximum context length in tokens");
  f.Define("capacity", "0.125", "fraction of tokens a routed layer takes");
  f.Define("routed-layers", "", "comma-separated routed layers (default: every other, from 1)");
  f.Define("predictor-hidden", "64", "predictor MLP hidden width");
  f.Define("mode", "mod", "routed layers: mod, staged (MoDE: depth routing, then experts) or integrated (MoDE: experts + no-op)");
  f.Define("experts", "4", "MoDE: MLP experts per routed layer");
  f.Define("expert-top-k", "1", "MoDE staged: experts per token");
  f.Define("expert-capacity-factor", "1.25", "MoDE: an expert takes at most this x its even share of a sequence in training");
  f.Define("balance-loss", "0.01", "MoDE: weight of the experts' load-balancing loss");
  f.Define("steps", "1000", "optimizer steps");
  f.Define("stop-at", "0", "stop after this step, saving state for --resume (0: run to the end)");
  f.Define("train-flops", "0", "training FLOP budget; if > 0 it sets the number of steps");
  f.Define("batch", "16", "sequences per step");
  f.Define("seq-len", "256", "bytes per training sequence");
  f.Define("lr", "0.003", "peak learning rate");
  f.Define("min-lr-ratio", "0.1", "final learning rate as a fraction of the peak");
  f.Define("warmup", "100", "warm-up steps");
  f.Define("weight-decay", "0.1", "AdamW weight decay (matrices only)");
  f.Define("grad-clip", "1.0", "gradient-norm clipping threshold");
  f.Define("predictor-loss", "1.0", "weight of the predictor BCE loss");
  f.Define("router-aux-loss", "0.0", "weight of the auxiliary router BCE loss");
  f.Define("seed", "1234", "random seed");
  f.Define("eval-every", "250", "validate every N steps (0: only at the end)");
  f.Define("eval-bytes", "65536", "validation bytes used during training");
  f.Define("save-every", "0", "checkpoint every N steps (0: only at the end)");
  f.Define("log-every", "50", "log line every N steps when stderr is not a terminal");
  f.Define("threads", "0", "intra-op threads (0: one per hardware thread)");
  f.Define("bf16", "true", "run training matmuls in bfloat16 (float32 master weights)");
  MODSERVE_RETURN_IF_ERROR(f.Parse(argc, argv));
  if (f.help_requested()) return Status::Ok();
  if (f.Str("train").empty()) return InvalidArgument("--train is required (a text file)");
  if (f.Str("out").empty()) return InvalidArgument("--out is required (a checkpoint directory)");

  TrainOptions o;
  o.train_text = f.Str("train");
  o.val_text = f.Str("val");
  o.out_dir = f.Str("out");
  o.resume = f.Bool("resume");
  ModelConfig& m = o.model;
  MODSERVE_RETURN_IF_ERROR(f.Get("layers", &m.n_layers));
  MODSERVE_RETURN_IF_ERROR(f.Get("d-model", &m.d_model));
  MODSERVE_RETURN_IF_ERROR(f.Get("heads", &m.n_heads));
  MODSERVE_RETURN_IF_ERROR(f.Get("d-ff", &m.d_ff));
  MODSERVE_RETURN_IF_ERROR(f.Get("max-context", &m.max_context));
  MODSERVE_RETURN_IF_ERROR(f.Get("capacity", &m.capacity));
  MODSERVE_RETURN_IF_ERROR(f.Get("predictor-hidden", &m.predictor_hidden));
  m.routing_enabled = !f.Bool("dense");
  m.mode = f.Str("mode");
  if (m.mode != "mod") {
    MODSERVE_RETURN_IF_ERROR(f.Get("experts", &m.moe_experts));
    MODSERVE_RETURN_IF_ERROR(f.Get("expert-top-k", &m.moe_top_k));
    MODSERVE_RETURN_IF_ERROR(f.Get("expert-capacity-factor", &m.moe_capacity_factor));
  }
  MODSERVE_RETURN_IF_ERROR(f.Get("balance-loss", &o.loss_weights.balance));
  m.routed_layers = ModelConfig::DefaultRoutedLayers(m.n_layers);
  if (!f.Str("routed-layers").empty()) MODSERVE_RETURN_IF_ERROR(f.Get("routed-layers", &m.routed_layers));
  if (!m.routing_enabled) m.routed_layers.clear();
  MODSERVE_RETURN_IF_ERROR(f.Get("steps", &o.steps));
  MODSERVE_RETURN_IF_ERROR(f.Get("stop-at", &o.stop_at));
  MODSERVE_RETURN_IF_ERROR(f.Get("train-flops", &o.train_flops));
  MODSERVE_RETURN_IF_ERROR(f.Get("batch", &o.batch));
  MODSERVE_RETURN_IF_ERROR(f.Get("seq-len", &o.seq_len));
  MODSERVE_RETURN_IF_ERROR(f.Get("lr", &o.lr));
  MODSERVE_RETURN_IF_ERROR(f.Get("min-lr-ratio", &o.min_lr_ratio));
  MODSERVE_RETURN_IF_ERROR(f.Get("warmup", &o.warmup));
  MODSERVE_RETURN_IF_ERROR(f.Get("weight-decay", &o.weight_decay));
  MODSERVE_RETURN_IF_ERROR(f.Get("grad-clip", &o.grad_clip));
  MODSERVE_RETURN_IF_ERROR(f.Get("predictor-loss", &o.loss_weights.predictor));
  MODSERVE_RETURN_IF_ERROR(f.Get("router-aux-loss", &o.loss_weights.router_aux));
  int64_t seed = 0, threads = 0;
  MODSERVE_RETURN_IF_ERROR(f.Get("seed", &seed));
  o.seed = static_cast<uint64_t>(seed);
  MODSERVE_RETURN_IF_ERROR(f.Get("eval-every", &o.eval_every));
  MODSERVE_RETURN_IF_ERROR(f.Get("eval-bytes", &o.eval_max_bytes));
  MODSERVE_RETURN_IF_ERROR(f.Get("save-every", &o.save_every));
  MODSERVE_RETURN_IF_ERROR(f.Get("log-every", &o.log_every));
  MODSERVE_RETURN_IF_ERROR(f.Get("threads", &threads));
  o.threads = static_cast<int>(threads);
  if (f.Str("bf16") != "true" && f.Str("bf16") != "false") return InvalidArgument("--bf16 takes true or false");
  o.bf16_autocast = f.Str("bf16") == "true";
  if (o.steps < 1) return InvalidArgument("--steps must be >= 1");
  if (!(o.lr > 0)) return InvalidArgument("--lr must be > 0");

  auto summary = Train(o);
  if (!summary.ok()) return summary.status();
  std::printf("trained %lld steps, %lld tokens, %.3g FLOPs (%.3g per token) in %.1f s; validation bits/byte %.4f; wrote %s\n",
              static_cast<long long>(summary->steps), static_cast<long long>(summary->tokens), summary->train_flops,
              summary->flops_per_token, summary->seconds, summary->final_val_bits_per_byte, o.out_dir.c_str());
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) { return RunToolMain("mod-train", argc, argv, Run); }
