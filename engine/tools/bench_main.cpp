// mod-bench: decode throughput of MoD against its dense baseline (same
// architecture, routing off) at several batch sizes, on the shipped model and
// on a synthetic model; realized compute fraction, KV bytes per token, and
// achieved GFLOP/s against a matmul peak measured for the same shapes in the
// same run. With --compare, decode tokens/s, compute fraction and KV bytes
// per token of several checkpoints as they are (e.g. MoD, dense, staged and
// integrated MoDE), side by side in one run. A benchmark tool, not a test:
// it prints figures.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/allocator_tuning.h"
#include "engine/checkpoint.h"
#include "engine/engine_torch.h"
#include "engine/few_row_linear.h"
#include "engine/huge_page_weights.h"
#include "engine/latency_stats.h"
#include "engine/flags.h"
#include "engine/parallel_chunks.h"

using namespace modserve;

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct DecodeRun {
  double tokens_per_s = 0;
  double seconds = 0;
  double compute_fraction = 1;  // over routed layers, decode steps only
  double kv_bytes_per_token = 0;
  double flops = 0;             // matmul FLOPs of the timed decode steps
  LatencyStats steps;           // each timed step's duration
  std::vector<int64_t> rows_per_layer;  // mean computing rows per decode step, per layer
};

// A model with config `cfg` holding `src`'s weights wherever the names match:
// with cfg = src's config a copy, with routing off the dense baseline (same
// architecture and trunk weights).
MoDTransformer CopyWithConfig(MoDTransformer& src, const ModelConfig& cfg) {
  MoDTransformer out(cfg);
  torch::NoGradGuard ng;
  auto from = src->named_parameters();
  for (auto& p : out->named_parameters()) p.value().copy_(from[p.key()]);
  return out;
}

ModelConfig DenseConfig(ModelConfig cfg) {
  cfg.routing_enabled = false;
  cfg.routed_layers.clear();
  return cfg;
}

// Shifts each routed layer's predictor bias so that `capacity` of the tokens of
// a calibration batch compute it, layer by layer in order.
void CalibratePredictors(MoDTransformer& m, int64_t seq_len, uint64_t seed) {
  torch::NoGradGuard ng;
  torch::manual_seed(seed);
  auto tokens = torch::randint(32, 127, {8, seq_len}, torch::kLong);  // printable bytes, as the bench feeds
  tokens.select(1, 0).fill_(m->config().bos_id);
  const ModelConfig& cfg = m->config();
  for (size_t i = 0; i < cfg.routed_layers.size(); ++i) {
    auto out = m->Forward(tokens, RouteMode::kPredictor);
    auto logits = out.routed[i].predictor_logits.flatten();
    const double q = torch::quantile(logits, 1.0 - cfg.capacity).item<double>();
    m->layers[cfg.routed_layers[i]]->as<BlockImpl>()->predictor->fc2->bias.sub_(q);
  }
}

double LayerMatmulFlops(const ModelConfig& c) {
  const double d = static_cast<double>(c.d_model), ff = static_cast<double>(c.d_ff);
  return 2.0 * (4.0 * d * d + 2.0 * d * ff);
}

// One engine decoding `batch` sequences: prefilled with `prompt` bytes
// (random printable ones, or slices of `text` at different offsets when it is
// not empty) at construction, then timed one decode step of the whole batch
// at a time. Each step feeds the greedy token (a trained model) or another
// random printable byte (a random model, whose predictors were calibrated on
// such bytes). `o` gives the dtypes and block size; the pool is sized here.
class DecodeSession {
 public:
  DecodeSession(MoDTransformer model, int64_t batch, int64_t prompt, int64_t steps, EngineOptions o, bool greedy, uint64_t seed,
                const std::string& text = "")
      : cfg_(model->config()), batch_(batch), prompt_(prompt), greedy_(greedy), rng_(seed), next_(static_cast<size_t>(batch)) {
    o.kv_blocks = batch * cfg_.n_layers * ((prompt + steps) / o.block_size + 2);
    engine_ = std::move(CreateEngine(model, o)).value();
    for (int64_t b = 0; b < batch; ++b) {
      engine_->AddSequence(b);
      std::vector<int64_t> toks{cfg_.bos_id};
      const size_t start = text.size() > static_cast<size_t>(prompt) ? static_cast<size_t>(b * 7919) % (text.size() - prompt) : 0;
      for (int64_t i = 1; i < prompt; ++i) {
        toks.push_back(text.size() > static_cast<size_t>(prompt) ? static_cast<unsigned char>(text[start + i])
                                                                 : static_cast<int64_t>(32 + rng_() % 95));
      }
      auto r = engine_->Step({{b, toks}});
      if (!r.ok()) throw std::runtime_error(r.status().ToString());
      next_[static_cast<size_t>(b)] = std::max_element(r->logits[0].begin(), r->logits[0].end()) - r->logits[0].begin();
    }
    run_.rows_per_layer.assign(static_cast<size_t>(cfg_.n_layers), 0);
  }

  // Decode step `s` (0-based) of every sequence, timed.
  void Step(int64_t s) {
    std::vector<SequenceChunk> chunks;
    for (int64_t b = 0; b < batch_; ++b) chunks.push_back({b, {next_[static_cast<size_t>(b)]}});
    const auto t0 = Clock::now();
    auto r = engine_->Step(chunks);
    const double took = Seconds(t0, Clock::now());
    run_.seconds += took;
    run_.steps.Add(took);
    if (!r.ok()) throw std::runtime_error(r.status().ToString());
    for (int64_t b = 0; b < batch_; ++b) {
      const auto& row = r->logits[static_cast<size_t>(b)];
      next_[static_cast<size_t>(b)] = greedy_ ? std::max_element(row.begin(), row.end()) - row.begin() : static_cast<int64_t>(32 + rng_() % 95);
    }
    for (const auto& l : r->stats.layers) {
      run_.rows_per_layer[static_cast<size_t>(l.layer)] += l.computed;
      const double ctx = static_cast<double>(prompt_ + s);  // upper bound on keys per computing token
      const double keys = l.routed ? ctx * cfg_.capacity : ctx;
      run_.flops += static_cast<double>(l.computed) * (LayerMatmulFlops(cfg_) + 4.0 * keys * static_cast<double>(cfg_.d_model));
      if (l.routed) {
        computed_ += static_cast<double>(l.computed);
        seen_ += static_cast<double>(l.computed + l.skipped);
        run_.flops += static_cast<double>(l.computed + l.skipped) * 2.0 * static_cast<double>(cfg_.d_model) * (1.0 + static_cast<double>(cfg_.predictor_hidden));
      }
    }
    run_.flops += static_cast<double>(batch_) * 2.0 * static_cast<double>(cfg_.d_model * cfg_.vocab_size);
    ++steps_;
  }

  // The figures of the steps run so far.
  DecodeRun Result() const {
    DecodeRun run = run_;
    run.tokens_per_s = static_cast<double>(batch_ * steps_) / run.seconds;
    run.compute_fraction = seen_ > 0 ? computed_ / seen_ : 1.0;
    for (auto& r : run.rows_per_layer) r = (r + steps_ / 2) / std::max<int64_t>(steps_, 1);
    const KvOccupancy occ = engine_->Occupancy();
    run.kv_bytes_per_token = static_cast<double>(occ.used_blocks * occ.bytes_per_block) / static_cast<double>(batch_ * (prompt_ + steps_));
    return run;
  }

 private:
  ModelConfig cfg_;
  int64_t batch_, prompt_;
  bool greedy_;
  std::mt19937_64 rng_;
  std::vector<int64_t> next_;
  std::unique_ptr<Engine> engine_;
  DecodeRun run_;
  int64_t steps_ = 0;
  double computed_ = 0, seen_ = 0;
};

// Runs `steps` decode steps of every session side by side: step s of each in
// turn, the order rotating from step to step, so that this shared machine's
// drift (tens of percent over seconds) hits them alike and their ratios
// hold even when the absolute figures move.
std::vector<DecodeRun> DecodeSideBySide(std::vector<std::unique_ptr<DecodeSession>>& sessions, int64_t steps) {
  const size_t n = sessions.size();
  for (int64_t s = 0; s < steps; ++s) {
    for (size_t i = 0; i < n; ++i) sessions[(i + static_cast<size_t>(s)) % n]->Step(s);
  }
  std::vector<DecodeRun> runs;
  for (const auto& session : sessions) runs.push_back(session->Result());
  return runs;
}

// One layer's four projection matmuls (QKV, out, MLP up, MLP down) with random
// weights of the model's shapes, for timing them outside the engine, either
// as the engine runs them (modserve::Linear: the few-row kernel where it
// applies) or all through the general GEMM (torch::linear).
struct LayerMatmuls {
  LayerMatmuls(int64_t d, int64_t ff, torch::ScalarType dtype) : d(d), ff(ff), dtype(dtype) {
    auto w = [&](int64_t i, int64_t o) {
      torch::nn::Linear l(torch::nn::LinearOptions(i, o).bias(false));
      l->to(dtype);
      return l;
    };
    wqkv = w(d, 3 * d), wo = w(d, d), w1 = w(d, ff), w2 = w(ff, d);
    for (auto* l : {&wqkv, &wo, &w1, &w2}) MoveWeightsToHugePages(**l);  // as the engine holds them
  }
  // Inputs for `rows` rows, made before timing: x [rows, d] and h [rows, ff].
  std::pair<torch::Tensor, torch::Tensor> Inputs(int64_t rows) const {
    return {torch::randn({rows, d}).to(dtype), torch::randn({rows, ff}).to(dtype)};
  }
  void Run(const std::pair<torch::Tensor, torch::Tensor>& in, bool general_gemm) const {
    auto mm = [&](const torch::nn::Linear& l, const torch::Tensor& x) {
      if (general_gemm) {
        torch::linear(x, l->weight);
      } else {
        Linear(l, x);
      }
    };
    mm(wqkv, in.first);
    mm(wo, in.first);
    mm(w1, in.first);
    mm(w2, in.second);
  }
  int64_t d, ff;
  torch::ScalarType dtype;
  torch::nn::Linear wqkv{nullptr}, wo{nullptr}, w1{nullptr}, w2{nullptr};
};

// GFLOP/s of the step's matmuls at the row counts the decode steps ran, timed
// back to back in this process: the faster of the engine's path and the
// general GEMM.
double MatmulPeak(const ModelConfig& c, const std::vector<int64_t>& rows_per_layer, int reps, torch::ScalarType dtype) {
  torch::NoGradGuard ng;
  LayerMatmuls mm(c.d_model, c.d_ff, dtype);
  std::vector<std::pair<torch::Tensor, torch::Tensor>> inputs;
  double flops_per_rep = 0;
  for (int64_t m : rows_per_layer) {
    if (m == 0) continue;
    inputs.push_back(mm.Inputs(m));
    flops_per_rep += static_cast<double>(m) * LayerMatmulFlops(c);
  }
  double best = 0;
  for (bool general : {false, true}) {
    auto t0 = Clock::now();
    for (int rep = 0; rep < reps; ++rep)
      for (const auto& in : inputs) mm.Run(in, general);
    best = std::max(best, flops_per_rep * reps / Seconds(t0, Clock::now()) / 1e9);
  }
  return best;
}

// Milliseconds for one layer's four projection matmuls at `rows` rows: in f32
// through the general GEMM and as the engine runs them, and in bf16: how a
// layer's cost scales with the tokens that compute it. The matmuls cycle
// through layers of random weights that together hold 256 MB or more, so that
// as in a whole model's decode step each layer's weights come from DRAM, not
// from the last-level cache.
void PrintRowScan(int64_t d, int64_t ff) {
  torch::NoGradGuard ng;
  std::printf("layer projection matmuls (d_model %lld, d_ff %lld): ms per layer by rows\n", static_cast<long long>(d), static_cast<long long>(ff));
  struct Variant {
    const char* name;
    torch::ScalarType dtype;
    bool general;
  };
  for (const Variant& v : {Variant{"f32 general GEMM", torch::kFloat, true}, Variant{"f32 engine", torch::kFloat, false},
                           Variant{"bf16 oneDNN", torch::kBFloat16, true}, Variant{"bf16 engine", torch::kBFloat16, false}}) {
    const double layer_bytes = static_cast<double>(4 * d * d + 2 * d * ff) * static_cast<double>(torch::elementSize(v.dtype));
    const int64_t n_layers = std::max<int64_t>(2, static_cast<int64_t>(std::ceil(256e6 / layer_bytes)));
    std::vector<std::unique_ptr<LayerMatmuls>> layers;
    for (int64_t l = 0; l < n_layers; ++l) layers.push_back(std::make_unique<LayerMatmuls>(d, ff, v.dtype));
    std::printf("  %-17s", v.name);
    for (int64_t m : {1, 4, 8, 16, 32, 64, 128}) {
      const auto in = layers[0]->Inputs(m);
      for (const auto& l : layers) l->Run(in, v.general);
      const int64_t calls = std::max<int64_t>(30, n_layers);
      auto t0 = Clock::now();
      for (int64_t i = 0; i < calls; ++i) layers[static_cast<size_t>(i % n_layers)]->Run(in, v.general);
      std::printf("  %lld rows %.2f", static_cast<long long>(m), Seconds(t0, Clock::now()) / static_cast<double>(calls) * 1e3);
    }
    std::printf("\n");
  }
}

// --compare: every checkpoint as it is, at every batch size, the models'
// decode steps side by side.
Status Compare(const std::vector<std::string>& dirs, const std::vector<int64_t>& batches, int64_t prompt, int64_t steps,
               const EngineOptions& eo, const std::string& text, bool json) {
  std::vector<MoDTransformer> models;
  for (const auto& d : dirs) {
    auto m = LoadCheckpoint(d);
    if (!m.ok()) return m.status();
    if (prompt + steps > (*m)->config().max_context) return InvalidArgument("--prompt + --steps exceeds the max_context of " + d);
    models.push_back(*m);
  }
  nlohmann::json results = nlohmann::json::array();
  for (int64_t b : batches) {
    std::vector<std::unique_ptr<DecodeSession>> sessions;
    for (const auto& m : models) sessions.push_back(std::make_unique<DecodeSession>(m, b, prompt, steps, eo, /*greedy=*/true, 1, text));
    const std::vector<DecodeRun> runs = DecodeSideBySide(sessions, steps);
    sessions.clear();
    for (size_t i = 0; i < models.size(); ++i) {
      const ModelConfig& c = models[i]->config();
      const DecodeRun& run = runs[i];
      const std::string mode = c.routing_enabled ? c.mode : "dense";
      results.push_back({{"model", dirs[i]},
                         {"mode", mode},
                         {"batch", b},
                         {"tokens_per_s", run.tokens_per_s},
                         {"compute_fraction", run.compute_fraction},
                         {"kv_bytes_per_token", run.kv_bytes_per_token}});
      if (!json) {
        std::printf("%-28s %-10s batch %3lld  %9.1f tok/s  compute %.3f  KV B/tok %.0f\n", dirs[i].c_str(), mode.c_str(),
                    static_cast<long long>(b), run.tokens_per_s, run.compute_fraction, run.kv_bytes_per_token);
        std::fflush(stdout);
      }
    }
  }
  if (json) std::printf("%s\n", nlohmann::json{{"results", results}}.dump(2).c_str());
  return Status::Ok();
}

Status Run(int argc, char** argv) {
  Flags f("mod-bench", "Decode throughput of MoD vs dense, KV bytes per token, achieved GFLOP/s.");
  f.Define("model", "models/mod-small", "checkpoint directory of the shipped model ('' to skip)");
  f.Define("batches", "1,8,32,64", "comma-separated batch sizes");
  f.Define("prompt", "128", "prompt tokens per sequence");
  f.Define("steps", "32", "timed decode steps");
  f.Define("block-size", "8", "KV cache block size in tokens");
  f.Define("dtype", "float32", "engine dtype: float32 or bfloat16");
  f.Define("kv-dtype", "auto", "KV cache dtype: auto (= --dtype), float32 or bfloat16");
  f.Define("synthetic", "true", "also run the synthetic model");
  f.Define("dense", "true", "time the dense twin beside MoD, step for step (false: MoD alone, as the serving benchmark's engine figure)");
  f.Define("synthetic-d-model", "1024", "synthetic model width");
  f.Define("synthetic-layers", "12", "synthetic model layers");
  f.Define("synthetic-heads", "16", "synthetic model heads");
  f.Define("synthetic-capacity", "0.125", "synthetic model capacity");
  f.Define("threads", "0", "threads of the engine's kernels (0: one per hardware thread)");
  f.Define("torch-threads", "0", "LibTorch intra-op threads (0: the same as --threads)");
  f.Define("compare", "", "comma-separated checkpoint directories to compare as they are (skips the MoD-vs-dense runs)");
  f.Define("prompt-text", "", "--compare: take prompts from this text file (default: random printable bytes)");
  f.Define("row-scan", "false", "only print how one synthetic layer's matmul time scales with its rows (f32 and bf16)", true);
  f.Define("json", "false", "print {\"results\": [...]}", true);
  MODSERVE_RETURN_IF_ERROR(f.Parse(argc, argv));
  if (f.help_requested()) return Status::Ok();
  int64_t prompt = 0, steps = 0, block_size = 0, sd = 0, sl = 0, sh = 0, threads = 0, torch_threads = 0;
  double scap = 0;
  MODSERVE_RETURN_IF_ERROR(f.Get("prompt", &prompt));
  MODSERVE_RETURN_IF_ERROR(f.Get("steps", &steps));
  MODSERVE_RETURN_IF_ERROR(f.Get("block-size", &block_size));
  MODSERVE_RETURN_IF_ERROR(f.Get("synthetic-d-model", &sd));
  MODSERVE_RETURN_IF_ERROR(f.Get("synthetic-layers", &sl));
  MODSERVE_RETURN_IF_ERROR(f.Get("synthetic-heads", &sh));
  MODSERVE_RETURN_IF_ERROR(f.Get("synthetic-capacity", &scap));
  MODSERVE_RETURN_IF_ERROR(f.Get("threads", &threads));
  MODSERVE_RETURN_IF_ERROR(f.Get("torch-threads", &torch_threads));
  if (prompt < 1 || steps < 1) return InvalidArgument("--prompt and --steps must be >= 1");
  if (block_size < 1) return InvalidArgument("--block-size must be >= 1");
  if (f.Str("dtype") != "float32" && f.Str("dtype") != "bfloat16") return InvalidArgument("--dtype must be float32 or bfloat16");
  if (f.Str("kv-dtype") != "auto" && f.Str("kv-dtype") != "float32" && f.Str("kv-dtype") != "bfloat16") {
    return InvalidArgument("--kv-dtype must be auto, float32 or bfloat16");
  }
  EngineOptions eo;
  eo.dtype = f.Str("dtype");
  eo.kv_dtype = f.Str("kv-dtype");
  eo.block_size = block_size;
  std::vector<int64_t> batches;
  MODSERVE_RETURN_IF_ERROR(f.Get("batches", &batches));
  for (int64_t b : batches) {
    if (b < 1) return InvalidArgument("--batches must list positive batch sizes");
  }
  TuneAllocatorForDecoding();
  eo.threads = threads > 0 ? static_cast<int>(threads) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  eo.torch_threads = torch_threads > 0 ? static_cast<int>(torch_threads) : eo.threads;
  SetKernelThreads(eo.threads, eo.torch_threads > 1);  // for the row scan and matmul peak; engines set the same again
  torch::set_num_threads(eo.torch_threads);

  if (f.Bool("row-scan")) {
    PrintRowScan(sd, 4 * sd);
    return Status::Ok();
  }
  if (!f.Str("compare").empty()) {
    std::vector<std::string> dirs;
    std::stringstream list(f.Str("compare"));
    for (std::string d; std::getline(list, d, ',');) {
      if (!d.empty()) dirs.push_back(d);
    }
    std::string text;
    if (!f.Str("prompt-text").empty()) {
      std::ifstream in(f.Str("prompt-text"), std::ios::binary);
      if (!in) return NotFound("--prompt-text: " + f.Str("prompt-text") + " cannot be read");
      text.assign(std::istreambuf_iterator<char>(in), {});
      if (text.size() <= static_cast<size_t>(prompt)) return InvalidArgument("--prompt-text is shorter than --prompt");
    }
    return Compare(dirs, batches, prompt, steps, eo, text, f.Bool("json"));
  }

  const bool with_dense = f.Bool("dense");
  std::vector<std::pair<std::string, MoDTransformer>> models;
  if (!f.Str("model").empty()) {
    auto m = LoadCheckpoint(f.Str("model"));
    if (!m.ok()) return m.status();
    if ((*m)->config().mode != "mod") {
      return InvalidArgument("--model " + f.Str("model") + " is a MoDE model, which has no dense twin with the same weights; "
                             "compare it with --compare DIR,DIR,...");
    }
    models.emplace_back("shipped", *m);
  }
  if (f.Bool("synthetic")) {
    ModelConfig c;
    c.d_model = sd;
    c.n_layers = sl;
    c.n_heads = sh;
    c.d_ff = 4 * sd;
    c.max_context = 1024;
    c.capacity = scap;
    c.routed_layers = ModelConfig::DefaultRoutedLayers(sl);
    MODSERVE_RETURN_IF_ERROR(c.Validate());
    torch::manual_seed(7);
    MoDTransformer m(c);
    CalibratePredictors(m, std::min<int64_t>(prompt + steps, c.max_context), 8);
    models.emplace_back("synthetic", m);
  }

  nlohmann::json results = nlohmann::json::array();
  for (auto& [name, mod] : models) {
    if (prompt + steps > mod->config().max_context) {
      return InvalidArgument("--prompt + --steps exceeds the " + name + " model's max_context " + std::to_string(mod->config().max_context));
    }
    MoDTransformer dense = with_dense ? CopyWithConfig(mod, DenseConfig(mod->config())) : MoDTransformer(nullptr);
    for (int64_t b : batches) {
      const bool greedy = name == "shipped";
      std::vector<std::unique_ptr<DecodeSession>> sessions;
      sessions.push_back(std::make_unique<DecodeSession>(CopyWithConfig(mod, mod->config()), b, prompt, steps, eo, greedy, 1));
      if (with_dense) {
        sessions.push_back(std::make_unique<DecodeSession>(CopyWithConfig(dense, dense->config()), b, prompt, steps, eo, greedy, 1));
      }
      const std::vector<DecodeRun> runs = DecodeSideBySide(sessions, steps);
      sessions.clear();  // frees the KV pools before the matmul peak is timed
      DecodeRun m = runs[0];
      const double step_p50_ms = m.steps.Percentile(50) * 1e3, step_p99_ms = m.steps.Percentile(99) * 1e3;
      const double achieved = m.flops / m.seconds / 1e9;
      const double peak = MatmulPeak(mod->config(), m.rows_per_layer, static_cast<int>(steps),
                                     f.Str("dtype") == "bfloat16" ? torch::kBFloat16 : torch::kFloat);
      nlohmann::json r = {{"model", name},
                          {"batch", b},
                          {"mod_tokens_per_s", m.tokens_per_s},
                          {"mod_step_p50_ms", step_p50_ms},
                          {"mod_step_p99_ms", step_p99_ms},
                          {"compute_fraction", m.compute_fraction},
                          {"kv_bytes_per_token_mod", m.kv_bytes_per_token},
                          {"achieved_gflops", achieved},
                          {"matmul_peak_gflops", peak},
                          {"peak_fraction", achieved / peak}};
      if (!with_dense) {
        results.push_back(r);
        if (!f.Bool("json")) {
          std::printf("%-9s batch %3lld  MoD %9.1f tok/s  step p50 %.2f p99 %.2f ms  compute %.3f  KV B/tok %.0f  %.1f GFLOP/s of %.1f peak (%.0f%%)\n",
                      name.c_str(), static_cast<long long>(b), m.tokens_per_s, step_p50_ms, step_p99_ms, m.compute_fraction,
                      m.kv_bytes_per_token, achieved, peak, 100.0 * achieved / peak);
          std::fflush(stdout);
        }
        continue;
      }
      const DecodeRun& d = runs[1];
      r["dense_tokens_per_s"] = d.tokens_per_s;
      r["speedup_ratio"] = m.tokens_per_s / d.tokens_per_s;
      r["kv_bytes_per_token_dense"] = d.kv_bytes_per_token;
      r["kv_bytes_ratio"] = m.kv_bytes_per_token / d.kv_bytes_per_token;
      r["dense_achieved_gflops"] = d.flops / d.seconds / 1e9;
      results.push_back(r);
      if (!f.Bool("json")) {
        std::printf("%-9s batch %3lld  MoD %9.1f tok/s  dense %9.1f tok/s  ratio %.2f  compute %.3f  KV B/tok %.0f vs %.0f (%.3f)  %.1f GFLOP/s of %.1f peak (%.0f%%)\n",
                    name.c_str(), static_cast<long long>(b), m.tokens_per_s, d.tokens_per_s, m.tokens_per_s / d.tokens_per_s,
                    m.compute_fraction, m.kv_bytes_per_token, d.kv_bytes_per_token, m.kv_bytes_per_token / d.kv_bytes_per_token, achieved,
                    peak, 100.0 * achieved / peak);
        std::fflush(stdout);
      }
    }
  }
  if (f.Bool("json")) std::printf("%s\n", nlohmann::json{{"results", results}}.dump(2).c_str());
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) { return RunToolMain("mod-bench", argc, argv, Run); }
