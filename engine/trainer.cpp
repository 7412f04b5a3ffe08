#include "engine/trainer.h"

#include <filesystem>
#include <random>
#include <sstream>
#include <thread>

#include <ATen/autocast_mode.h>

#include "engine/checkpoint.h"
#include "engine/corpus.h"
#include "engine/evaluator.h"
#include "engine/lr_schedule.h"
#include "engine/progress.h"

namespace modserve {

namespace fs = std::filesystem;

double TrainFlopsPerToken(const ModelConfig& cfg, int64_t seq_len) {
  const double fraction = cfg.routing_enabled ? static_cast<double>(cfg.TopK(seq_len)) / static_cast<double>(seq_len) : 1.0;
  return 3.0 * MoDTransformerImpl::ForwardFlopsPerToken(cfg, seq_len, fraction);
}

Losses TrainingLosses(MoDTransformer& model, const torch::Tensor& rows, const LossWeights& w) {
  const int64_t n = rows.size(1) - 1;
  ForwardOutput out = model->Forward(rows.narrow(1, 0, n), RouteMode::kTopK);
  return ComputeLosses(out, rows.narrow(1, 1, n), w);
}

namespace {

std::string RoutingName(const ModelConfig& c) {
  if (!c.routing_enabled) return "dense";
  if (c.mode == "mod") return "mode mod";
  return "mode " + c.mode + " with " + std::to_string(c.moe_experts) + " experts (top-" + std::to_string(c.moe_top_k) + ")";
}

// A resumed run continues the checkpoint's model: the routing asked for must
// be the checkpoint's, or the run would silently train something else.
Status CheckSameRouting(const ModelConfig& have, const ModelConfig& want, const std::string& dir) {
  if (RoutingName(have) == RoutingName(want)) return Status::Ok();
  return InvalidArgument("--resume: the checkpoint in " + dir + " is " + RoutingName(have) + ", but the flags ask for " +
                         RoutingName(want));
}

// Runs matmuls in bfloat16 on the CPU while enabled (weights stay float32).
class CpuAutocast {
 public:
  explicit CpuAutocast(bool on) : on_(on) {
    if (!on_) return;
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
  ~CpuAutocast() {
    if (!on_) return;
    at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
  }

 private:
  bool on_;
};

std::string Fmt(const char* fmt, double a, double b = 0, double c = 0, double d = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, a, b, c, d);
  return buf;
}

std::unique_ptr<torch::optim::AdamW> MakeOptimizer(MoDTransformer& model, const TrainOptions& o) {
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : model->named_parameters()) (p.value().dim() >= 2 ? decay : no_decay).push_back(p.value());
  auto opts = torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(1e-8);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(opts).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(opts).weight_decay(0.0)));
  return std::make_unique<torch::optim::AdamW>(groups, opts);
}

Status SaveState(MoDTransformer& model, torch::optim::AdamW& opt, int64_t next_step, const std::string& dir) {
  MODSERVE_RETURN_IF_ERROR(SaveCheckpoint(model, dir));
  torch::serialize::OutputArchive archive;
  opt.save(archive);
  archive.write("next_step", torch::tensor(next_step, torch::kLong));
  const std::string path = (fs::path(dir) / "trainer_state.pt").string();
  archive.save_to(path + ".tmp");
  std::error_code ec;
  fs::rename(path + ".tmp", path, ec);
  if (ec) return FailedPrecondition(path + ": cannot rename into place: " + ec.message());
  return Status::Ok();
}

}  // namespace

StatusOr<TrainSummary> Train(const TrainOptions& o) {
  try {
    torch::set_num_threads(o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    MODSERVE_RETURN_IF_ERROR(o.model.Validate());
    if (o.seq_len < 2 || o.seq_len > o.model.max_context) return InvalidArgument("--seq-len must be in [2, max_context]");
    if (o.batch < 1) return InvalidArgument("--batch must be >= 1");

    torch::manual_seed(o.seed);
    MoDTransformer model(o.model);
    int64_t first_step = 0;
    if (o.resume) {
      auto loaded = LoadCheckpoint(o.out_dir);
      if (!loaded.ok()) return loaded.status();
      model = std::move(loaded).value();
      MODSERVE_RETURN_IF_ERROR(CheckSameRouting(model->config(), o.model, o.out_dir));
    }
    auto opt = MakeOptimizer(model, o);
    if (o.resume) {
      const std::string path = (fs::path(o.out_dir) / "trainer_state.pt").string();
      if (!fs::exists(path)) return NotFound(path + ": no trainer state to resume from");
      torch::serialize::InputArchive archive;
      archive.load_from(path);
      opt->load(archive);
      torch::Tensor next;
      archive.read("next_step", next);
      first_step = next.item<int64_t>();
    }
    ModelConfig cfg = model->config();
    model->train();

    auto train = TokenCorpus::FromFile(o.train_text, cfg.bos_id);
    if (!train.ok()) return train.status();
    std::optional<TokenCorpus> val;
    if (!o.val_text.empty()) {
      auto v = TokenCorpus::FromFile(o.val_text, cfg.bos_id);
      if (!v.ok()) return v.status();
      val = std::move(v).value();
    }

    TrainSummary sum;
    sum.flops_per_token = TrainFlopsPerToken(cfg, o.seq_len);
    int64_t total_steps = o.steps;
    if (o.train_flops > 0) {
      total_steps = std::max<int64_t>(1, static_cast<int64_t>(o.train_flops / (sum.flops_per_token * static_cast<double>(o.batch * o.seq_len))));
    }
    std::fprintf(stderr, "mod-train: %s model (%s), %lld parameters, %.3g training FLOPs/token, %lld steps x %lld x %lld tokens\n",
                 cfg.routing_enabled ? (cfg.mode == "mod" ? "MoD" : "MoDE") : "dense", RoutingName(cfg).c_str(),
                 static_cast<long long>([&] {
                   int64_t n = 0;
                   for (auto& p : model->parameters()) n += p.numel();
                   return n;
                 }()),
                 sum.flops_per_token, static_cast<long long>(total_steps), static_cast<long long>(o.batch), static_cast<long long>(o.seq_len));

    ProgressReporter progress(first_step, total_steps, o.log_every);
    EvalOptions eval_opts;
    eval_opts.seq_len = o.seq_len;
    eval_opts.max_bytes = o.eval_max_bytes;
    auto validate = [&](int64_t step) {
      if (!val) return;
      EvalResult r = Evaluate(model, *val, eval_opts);
      sum.final_val_bits_per_byte = r.bits_per_byte;
      progress.Message(Fmt("validation @ step %.0f: bits/byte %.4f (top-k %.4f), predictor agreement %.4f,",
                           static_cast<double>(step), r.bits_per_byte, r.bits_per_byte_topk, r.mean_predictor_agreement) +
                       Fmt(" compute fraction %.4f", r.mean_compute_fraction));
    };

    const int64_t end_step = o.stop_at > 0 ? std::min(o.stop_at, total_steps) : total_steps;
    for (int64_t step = first_step; step < end_step; ++step) {
      const double lr = WarmupCosineLr(step, o.warmup, total_steps, o.lr, o.min_lr_ratio);
      for (auto& group : opt->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step));
      torch::Tensor rows = train->SampleBatch(o.batch, o.seq_len, rng);  // [B, S + 1]
      opt->zero_grad();
      Losses l;
      {
        CpuAutocast autocast(o.bf16_autocast);
        l = TrainingLosses(model, rows, o.loss_weights);
      }
      l.total.backward();
      torch::nn::utils::clip_grad_norm_(model->parameters(), o.grad_clip);
      opt->step();
      const int64_t tokens = rows.size(0) * (rows.size(1) - 1);
      sum.tokens += tokens;
      progress.Update(step, l.lm.item<double>(), tokens,
                      Fmt("pred %.3f bal %.3f lr %.2e", l.predictor.item<double>(), l.balance.item<double>(), lr));
      const bool last = step + 1 == end_step;
      if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && !last) validate(step + 1);
      if (o.save_every > 0 && (step + 1) % o.save_every == 0 && !last) MODSERVE_RETURN_IF_ERROR(SaveState(model, *opt, step + 1, o.out_dir));
    }
    progress.Finish();
    validate(end_step);
    sum.steps = end_step - first_step;
    sum.seconds = progress.elapsed_seconds();
    sum.train_flops = sum.flops_per_token * static_cast<double>(sum.tokens);

    // Provenance goes into config.json; a resumed run adds to the earlier totals.
    nlohmann::json prov = cfg.training.is_object() ? cfg.training : nlohmann::json::object();
    const int64_t prev_tokens = prov.value("tokens", int64_t{0});
    const double prev_seconds = prov.value("seconds", 0.0);
    prov["trainer"] = "mod-train";
    prov["train_text"] = fs::path(o.train_text).filename().string();
    prov["train_bytes"] = train->num_bytes();
    prov["val_text"] = o.val_text.empty() ? "" : fs::path(o.val_text).filename().string();
    prov["steps"] = total_steps;
    prov["batch"] = o.batch;
    prov["seq_len"] = o.seq_len;
    prov["tokens"] = prev_tokens + sum.tokens;
    prov["train_flops_per_token"] = sum.flops_per_token;
    prov["train_flops"] = sum.flops_per_token * static_cast<double>(prev_tokens + sum.tokens);
    prov["seconds"] = prev_seconds + sum.seconds;
    prov["lr"] = o.lr;
    prov["warmup"] = o.warmup;
    prov["weight_decay"] = o.weight_decay;
    prov["grad_clip"] = o.grad_clip;
    prov["seed"] = o.seed;
    prov["bf16_autocast"] = o.bf16_autocast;
    prov["predictor_loss_weight"] = o.loss_weights.predictor;
    prov["router_aux_loss_weight"] = o.loss_weights.router_aux;
    prov["balance_loss_weight"] = o.loss_weights.balance;
    if (val) prov["final_val_bits_per_byte"] = sum.final_val_bits_per_byte;
    model->set_training_provenance(prov);
    MODSERVE_RETURN_IF_ERROR(SaveState(model, *opt, end_step, o.out_dir));
    return sum;
  } catch (const c10::Error& e) {
    return Internal(std::string("training failed: ") + e.what_without_backtrace());
  }
}

}  // namespace modserve
