#include "engine/engine.h"

#include <exception>
#include <limits>
#include <thread>
#include <tuple>
#include <unordered_set>

#include "engine/checkpoint.h"
#include "engine/engine_torch.h"
#include "engine/few_row_linear.h"
#include "engine/huge_page_weights.h"
#include "engine/kv_cache.h"
#include "engine/paged_attention.h"
#include "engine/parallel_chunks.h"
#include "engine/prefix_reuse.h"
#include "engine/routed_rows.h"
#include "engine/row_norm_rope.h"

namespace modserve {

struct Engine::Impl {
  MoDTransformer model{nullptr};
  torch::Device device{torch::kCPU};
  std::unique_ptr<KvCache> kv;
  std::unique_ptr<PrefixReuse> prefix;  // with prefix caching; declared after kv: it holds kv's blocks
  std::unordered_map<SeqId, int64_t> positions;  // tokens processed per sequence
  std::vector<int64_t> routed_ordinal;           // per layer: index among routed layers, or -1
  torch::Tensor rope_cos, rope_sin;              // [max_context, head_dim / 2] f32 on the CPU: RoPE at every position

  StatusOr<StepResult> Step(const std::vector<SequenceChunk>& batch, bool all_logits);
  Status Validate(const std::vector<SequenceChunk>& batch) const;
};

namespace {

Status CheckDevice(const std::string& device, torch::Device* out) {
  if (device == "cpu") {
    *out = torch::Device(torch::kCPU);
    return Status::Ok();
  }
  if (device == "cuda") {
    if (!torch::cuda::is_available()) {
      return FailedPrecondition(
          "device: cuda was requested, but this LibTorch build has no CUDA support or no GPU is visible "
          "(build against a CUDA-enabled LibTorch, see README)");
    }
    *out = torch::Device(torch::kCUDA, 0);
    return Status::Ok();
  }
  return InvalidArgument("device must be \"cpu\" or \"cuda\", got \"" + device + "\"");
}

// [M, H, hd] rotated at positions [M].
torch::Tensor Rope(const torch::Tensor& x, const torch::Tensor& positions, double theta) {
  return ApplyRope(x.permute({1, 0, 2}).unsqueeze(0), positions.unsqueeze(0), theta).squeeze(0).permute({1, 0, 2});
}

// q and k of qkv [M, 3, H, hd] rotated at positions [M]: in place, from the
// engine's f32 tables, where qkv is a contiguous f32 or bf16 CPU tensor; else
// by ApplyRope. Returns q, k, v, each [M, H, hd].
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> RotateQk(torch::Tensor qkv, const torch::Tensor& positions,
                                                                 const torch::Tensor& cos, const torch::Tensor& sin, double theta) {
  const auto dtype = qkv.scalar_type();
  if (qkv.device().is_cpu() && (dtype == torch::kFloat || dtype == torch::kBFloat16) && qkv.is_contiguous()) {
    auto pos = positions.contiguous();
    const int64_t M = qkv.size(0), H = qkv.size(2), hd = qkv.size(3);
    // q's and k's heads sit next to each other in a row: rotate them as 2H heads.
    if (dtype == torch::kBFloat16) {
      RopeRowsInPlaceBf16(static_cast<uint16_t*>(qkv.data_ptr()), M, 3 * H * hd, 2 * H, hd, pos.data_ptr<int64_t>(),
                          cos.data_ptr<float>(), sin.data_ptr<float>());
    } else {
      RopeRowsInPlace(qkv.data_ptr<float>(), M, 3 * H * hd, 2 * H, hd, pos.data_ptr<int64_t>(), cos.data_ptr<float>(),
                      sin.data_ptr<float>());
    }
    return {qkv.select(1, 0), qkv.select(1, 1), qkv.select(1, 2)};
  }
  return {Rope(qkv.select(1, 0), positions, theta), Rope(qkv.select(1, 1), positions, theta), qkv.select(1, 2)};
}

}  // namespace

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

StatusOr<std::unique_ptr<Engine>> CreateEngine(MoDTransformer model, const EngineOptions& opts) {
  if (opts.kv_blocks < 1) return InvalidArgument("kv_blocks must be >= 1");
  if (opts.block_size < 1 || opts.block_size > 4096) return InvalidArgument("block_size must be in [1, 4096]");
  if (opts.dtype != "float32" && opts.dtype != "bfloat16") return InvalidArgument("dtype must be \"float32\" or \"bfloat16\", got \"" + opts.dtype + "\"");
  if (opts.kv_dtype != "auto" && opts.kv_dtype != "float32" && opts.kv_dtype != "bfloat16") {
    return InvalidArgument("kv_dtype must be \"auto\", \"float32\" or \"bfloat16\", got \"" + opts.kv_dtype + "\"");
  }
  const auto dtype = opts.dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat;
  const std::string kv_name = opts.kv_dtype == "auto" ? opts.dtype : opts.kv_dtype;
  const auto kv_dtype = kv_name == "bfloat16" ? torch::kBFloat16 : torch::kFloat;
  auto impl = std::make_unique<Engine::Impl>();
  MODSERVE_RETURN_IF_ERROR(CheckDevice(opts.device, &impl->device));
  try {
    const int threads = opts.threads > 0 ? opts.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const int torch_threads = opts.torch_threads > 0 ? opts.torch_threads : threads;
    SetKernelThreads(threads, /*openmp=*/torch_threads > 1);  // see parallel_chunks.h
    torch::set_num_threads(torch_threads);
    model->eval();
    model->to(impl->device, dtype);
    if (impl->device.is_cpu()) MoveWeightsToHugePages(*model);  // fewer TLB misses while a step streams the weights
    impl->model = model;
    const ModelConfig& cfg = model->config();
    KvBlockManagerOptions bo;
    bo.num_blocks = opts.kv_blocks;
    bo.block_size = opts.block_size;
    bo.n_layers = cfg.n_layers;
    impl->kv = std::make_unique<KvCache>(bo, cfg.n_heads, cfg.head_dim(), torch::TensorOptions().dtype(kv_dtype).device(impl->device));
    int64_t ordinal = 0;
    for (int64_t l = 0; l < cfg.n_layers; ++l) impl->routed_ordinal.push_back(cfg.IsRouted(l) ? ordinal++ : -1);
    if (opts.prefix_caching) impl->prefix = std::make_unique<PrefixReuse>(impl->kv.get(), cfg, impl->routed_ordinal);
    std::tie(impl->rope_cos, impl->rope_sin) = RopeCosSin(torch::arange(cfg.max_context, torch::kLong), cfg.head_dim(), cfg.rope_theta);
  } catch (const c10::Error& e) {
    return Internal(std::string("engine start-up failed: ") + e.what_without_backtrace());
  }
  return std::make_unique<Engine>(std::move(impl));
}

StatusOr<std::unique_ptr<Engine>> Engine::Load(const std::string& model_dir, const EngineOptions& opts) {
  torch::Device device(torch::kCPU);
  MODSERVE_RETURN_IF_ERROR(CheckDevice(opts.device, &device));  // fail fast, before reading weights
  auto model = LoadCheckpoint(model_dir);
  if (!model.ok()) return model.status();
  return CreateEngine(std::move(model).value(), opts);
}

const ModelConfig& Engine::config() const { return impl_->model->config(); }

Status Engine::AddSequence(SeqId id) {
  MODSERVE_RETURN_IF_ERROR(impl_->kv->manager().AddSequence(id));
  impl_->positions[id] = 0;
  if (impl_->prefix) impl_->prefix->Add(id);
  return Status::Ok();
}

void Engine::Release(SeqId id) {
  impl_->kv->manager().Release(id);
  impl_->positions.erase(id);
  if (impl_->prefix) impl_->prefix->Release(id);
}

int64_t Engine::MatchPrefix(SeqId id, const std::vector<int64_t>& tokens, int64_t limit, const std::string& cache_salt) {
  auto it = impl_->positions.find(id);
  if (!impl_->prefix || it == impl_->positions.end() || it->second != 0) return 0;
  it->second = impl_->prefix->Attach(id, tokens, std::min<int64_t>(limit, static_cast<int64_t>(tokens.size()) - 1), cache_salt);
  return it->second;
}

void Engine::ClearPrefixCache() {
  if (impl_->prefix) impl_->prefix->Clear();
}

bool Engine::prefix_caching() const { return impl_->prefix != nullptr; }

int64_t Engine::NumTokens(SeqId id) const {
  auto it = impl_->positions.find(id);
  return it == impl_->positions.end() ? -1 : it->second;
}

KvOccupancy Engine::Occupancy() const {
  const KvBlockManager& m = impl_->kv->manager();
  KvOccupancy o;
  o.block_size = m.block_size();
  o.total_blocks = m.num_blocks();
  o.used_blocks = m.used_blocks();
  o.cached_blocks = m.cached_blocks();
  for (int64_t l = 0; l < config().n_layers; ++l) o.used_blocks_per_layer.push_back(m.used_blocks(l));
  o.bytes_per_block = impl_->kv->bytes_per_block();
  return o;
}

int64_t Engine::ReleasableBlocks(SeqId id) const { return impl_->kv->manager().ReleasableBlocks(id); }

StatusOr<StepResult> Engine::Step(const std::vector<SequenceChunk>& batch, bool return_all_logits) {
  return impl_->Step(batch, return_all_logits);
}

Status Engine::Impl::Validate(const std::vector<SequenceChunk>& batch) const {
  const ModelConfig& cfg = model->config();
  if (batch.empty()) return InvalidArgument("empty batch");
  std::unordered_set<SeqId> seen;
  for (const auto& c : batch) {
    auto it = positions.find(c.id);
    if (it == positions.end()) return InvalidArgument("unknown sequence " + std::to_string(c.id));
    if (!seen.insert(c.id).second) return InvalidArgument("sequence " + std::to_string(c.id) + " appears twice in one step");
    if (c.tokens.empty()) return InvalidArgument("sequence " + std::to_string(c.id) + " brings no tokens");
    if (it->second + static_cast<int64_t>(c.tokens.size()) > cfg.max_context) {
      return InvalidArgument("sequence " + std::to_string(c.id) + " would exceed max_context " + std::to_string(cfg.max_context));
    }
    for (int64_t t : c.tokens) {
      if (t < 0 || t >= cfg.vocab_size) return InvalidArgument("token id " + std::to_string(t) + " outside [0, vocab_size)");
    }
  }
  return Status::Ok();
}

namespace {

// Compares the predictor's decisions with top-k routing on every prefill chunk
// long enough for top-k to mean something (see LayerStepStats).
void CountTopKAgreement(const ModelConfig& cfg, const RoutedTokens& t, const std::vector<int64_t>& offset, LayerStepStats* ls) {
  for (size_t b = 0; b + 1 < offset.size(); ++b) {
    const int64_t begin = offset[b], S = offset[b + 1] - begin;
    if (S < kAgreementMinChunk) continue;
    auto r = torch::from_blob(const_cast<float*>(t.router.data()) + begin, {S}, torch::kFloat);  // [S]
    auto top = std::get<1>(r.topk(cfg.TopK(S)));  // [k] indices within the chunk
    std::vector<bool> in_top(static_cast<size_t>(S), false);
    auto top_a = top.accessor<int64_t, 1>();
    for (int64_t i = 0; i < top.size(0); ++i) in_top[static_cast<size_t>(top_a[i])] = true;
    for (int64_t i = 0; i < S; ++i) ls->agreement_matches += ((t.computes[static_cast<size_t>(begin + i)] != 0) == in_top[static_cast<size_t>(i)]);
    ls->agreement_tokens += S;
  }
}

}  // namespace

StatusOr<StepResult> Engine::Impl::Step(const std::vector<SequenceChunk>& batch, bool all_logits) {
  MODSERVE_RETURN_IF_ERROR(Validate(batch));
  const ModelConfig& cfg = model->config();
  const int64_t B = static_cast<int64_t>(batch.size());
  KvBlockManager& blocks = kv->manager();

  // Flatten the ragged batch: token t of chunk b sits at row offset[b] + t.
  std::vector<int64_t> ids, pos, chunk_of, offset(static_cast<size_t>(B + 1), 0);
  for (int64_t b = 0; b < B; ++b) {
    const auto& c = batch[static_cast<size_t>(b)];
    const int64_t start = positions.at(c.id);
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      ids.push_back(c.tokens[i]);
      pos.push_back(start + static_cast<int64_t>(i));
      chunk_of.push_back(b);
    }
    offset[static_cast<size_t>(b + 1)] = static_cast<int64_t>(ids.size());
  }
  const int64_t N = static_cast<int64_t>(ids.size());

  StepResult result;
  result.routes.resize(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) result.routes[static_cast<size_t>(b)].assign(static_cast<size_t>(offset[b + 1] - offset[b]), 0);
  result.stats.tokens = N;
  result.stats.sequences = B;

  // Appends made in this step, undone if any allocation fails.
  struct Journal {
    SeqId id;
    int64_t layer, prev_tokens;
  };
  std::vector<Journal> journal;
  auto rollback = [&] {
    for (auto it = journal.rbegin(); it != journal.rend(); ++it) blocks.Truncate(it->id, it->layer, it->prev_tokens);
  };

  try {
    torch::NoGradGuard no_grad;
    auto long_opts = torch::TensorOptions().dtype(torch::kLong);
    auto tok = torch::tensor(ids, long_opts).to(device);        // [N]
    auto all_pos = torch::tensor(pos, long_opts).to(device);    // [N]
    auto x = model->tok_emb(tok);                               // [N, d]

    // Records that `rows` (ascending) computed the routed layer with route bit
    // `bit`, and counts them per chunk into `per_chunk` (if not null).
    auto mark_computed = [&](const std::vector<int64_t>& rows, uint64_t bit, std::vector<int64_t>* per_chunk) {
      for (int64_t i : rows) {
        const int64_t b = chunk_of[static_cast<size_t>(i)];
        if (per_chunk != nullptr) ++(*per_chunk)[static_cast<size_t>(b)];
        result.routes[static_cast<size_t>(b)][static_cast<size_t>(i - offset[b])] |= bit;
      }
    };

    for (int64_t l = 0; l < cfg.n_layers; ++l) {
      auto block = model->layers[l]->as<BlockImpl>();
      const bool routed = cfg.IsRouted(l);
      const bool skips = cfg.SkipsAttention(l);  // depth routing: tokens may skip the whole block
      const uint64_t bit = routed ? uint64_t{1} << routed_ordinal[static_cast<size_t>(l)] : 0;
      LayerStepStats ls;
      ls.layer = l;
      ls.routed = routed;
      ls.computed = N;
      torch::Tensor idx;  // [M] rows that compute
      RoutedTokens routed_tokens;  // router weights and decisions of every row
      std::vector<int64_t> per_chunk(static_cast<size_t>(B), 0);
      if (skips) {
        routed_tokens = ScoreRoutedTokens(*block, x);
        const std::vector<int64_t>& rows = routed_tokens.rows;
        mark_computed(rows, bit, &per_chunk);
        ls.computed = static_cast<int64_t>(rows.size());
        ls.skipped = N - ls.computed;
        CountTopKAgreement(cfg, routed_tokens, offset, &ls);
        if (rows.empty()) {  // no token computes this layer: skip it whole
          result.stats.layers.push_back(ls);
          continue;
        }
        idx = torch::tensor(rows, long_opts).to(device);
      } else {
        for (int64_t b = 0; b < B; ++b) per_chunk[static_cast<size_t>(b)] = offset[b + 1] - offset[b];
      }
      auto xs = skips ? x.index_select(0, idx) : x;                            // [M, d]
      auto ps = skips ? all_pos.index_select(0, idx) : all_pos;                // [M]
      auto [q, k, v] = RotateQk(block->Qkv(xs), ps, rope_cos, rope_sin, cfg.rope_theta);  // each [M, H, hd]

      // Reserve and write this layer's K/V for every chunk, then attend.
      std::vector<AttentionChunk> chunks;
      std::vector<int64_t> slots;
      int64_t row = 0;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t m = per_chunk[static_cast<size_t>(b)];
        if (m == 0) continue;
        const SeqId id = batch[static_cast<size_t>(b)].id;
        const int64_t prev = blocks.NumTokens(id, l);
        auto s = blocks.Append(id, l, m);
        if (!s.ok()) {
          rollback();
          return s.status();
        }
        journal.push_back({id, l, prev});
        slots.insert(slots.end(), s->begin(), s->end());
        chunks.push_back({id, row, m, prev});
        row += m;
      }
      kv->Write(slots, k, v);
      auto a = block->Attend(PagedAttention(*kv, l, q, chunks), xs.sizes());  // [M, d]
      torch::Tensor delta;                                                     // [M, d]
      if (block->moe) {
        // MoDE: each expert runs one matmul over the rows sent to it, from every sequence.
        torch::Tensor ran;  // [M] bool: rows that ran an expert
        delta = a + block->moe->Route(block->mlp_norm(xs + a), &ls.expert_tokens, &ran);
        if (!skips) {  // integrated: the expert routing is the layer's decision
          const std::vector<int64_t> ran_rows = RowsWhere(ran);
          mark_computed(ran_rows, bit, nullptr);
          ls.computed = static_cast<int64_t>(ran_rows.size());
          ls.skipped = N - ls.computed;
        }
      } else {
        delta = a + block->DenseMlp(xs + a);
      }
      result.stats.layers.push_back(ls);
      if (skips) {
        x = AddRoutedDelta(x.contiguous(), routed_tokens, delta);
      } else {
        x = x + delta;
      }
    }

    std::vector<int64_t> last(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) last[static_cast<size_t>(b)] = offset[b + 1] - 1;
    auto last_rows = x.index_select(0, torch::tensor(last, long_opts).to(device));
    auto logits = Linear(model->lm_head, model->final_norm(last_rows)).to(torch::kCPU, torch::kFloat).contiguous();  // [B, V]
    const int64_t V = logits.size(1);
    const float* p = logits.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) result.logits.emplace_back(p + b * V, p + (b + 1) * V);
    if (all_logits) {
      auto all = Linear(model->lm_head, model->final_norm(x)).to(torch::kCPU, torch::kFloat).contiguous();  // [N, V]
      const float* q = all.data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) result.all_logits.emplace_back(q + offset[b] * V, q + offset[b + 1] * V);
    }
  } catch (const c10::Error& e) {
    rollback();
    return Internal(std::string("engine step failed: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {  // e.g. bad_alloc: all-or-nothing all the same
    rollback();
    return Internal(std::string("engine step failed: ") + e.what());
  }

  if (prefix) {
    std::vector<int64_t> starts;
    for (const auto& c : batch) starts.push_back(positions.at(c.id));
    prefix->Record(batch, starts, result);
  }
  for (const auto& c : batch) positions[c.id] += static_cast<int64_t>(c.tokens.size());
  result.stats.kv_blocks_used = blocks.used_blocks();
  result.stats.kv_blocks_free = blocks.free_blocks();
  return result;
}

}  // namespace modserve
