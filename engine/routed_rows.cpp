#include "engine/routed_rows.h"

#include "engine/bf16_bits.h"
#include "engine/few_row_gemm.h"
#include "engine/few_row_linear.h"
#include "engine/gelu_columns.h"
#include "engine/parallel_chunks.h"
#include "engine/row_norm_rope.h"

namespace modserve {

namespace {

// The predictor's normalization (PredictorImpl::forward: RmsNormalize(x, 1e-5)).
constexpr float kPredictorNormEps = 1e-5f;

// The element type of the loops and the torch arithmetic they follow: an f32
// op computes in f32; a bf16 op converts its operands to f32 and rounds its
// result to bf16 (Round), so Round marks where each torch op of the model's
// bf16 forward rounds.
struct F32 {
  using T = float;
  static float Load(float v) { return v; }
  static float Store(float v) { return v; }
  static float Round(float v) { return v; }
  static void Gemm(const T* x, int64_t M, const T* w, int64_t N, int64_t K, T* y, int64_t b, int64_t e) { FewRowGemm(x, M, w, N, K, y, b, e); }
  static void Norm(const T* x, int64_t rows, int64_t dim, T* out) { RmsNormRows(x, rows, dim, nullptr, kPredictorNormEps, out); }
  static void Gelu(T* y, int64_t M, int64_t N, int64_t b, int64_t e, const T* bias) { GeluColumns(y, M, N, b, e, bias); }
};

struct Bf16 {
  using T = uint16_t;
  static float Load(uint16_t v) { return Bf16ToFloat(v); }
  static uint16_t Store(float v) { return FloatToBf16(v); }
  static float Round(float v) { return Bf16ToFloat(FloatToBf16(v)); }
  static void Gemm(const T* x, int64_t M, const T* w, int64_t N, int64_t K, T* y, int64_t b, int64_t e) {
    FewRowGemmBf16(x, M, w, N, K, y, b, e);
  }
  static void Norm(const T* x, int64_t rows, int64_t dim, T* out) { RmsNormRowsBf16(x, rows, dim, nullptr, kPredictorNormEps, out); }
  static void Gelu(T* y, int64_t M, int64_t N, int64_t b, int64_t e, const T* bias) { GeluColumnsBf16(y, M, N, b, e, bias); }
};

template <typename E>
const typename E::T* Data(const torch::Tensor& t) {
  return static_cast<const typename E::T*>(t.data_ptr());
}

// Whether the loops may stand in for the torch code: every tensor of `dtype`
// (f32 or bf16) on the CPU, no gradient wanted, the predictor's biases where the loops
// expect them, and no more rows than the model's own Linear sends to the
// few-row GEMM (beyond that its general GEMM adds the bias before rounding
// once, and is the faster). bf16 needs the CPU's bf16 dot product.
bool TakesLoops(const BlockImpl& block, const torch::Tensor& x, torch::ScalarType dtype) {
  const auto& p = block.predictor;
  auto same = [&](const torch::Tensor& w) {
    return dtype == torch::kFloat ? InferenceF32OnCpu(x, w) : InferenceBf16OnCpu(x, w);
  };
  if (dtype != torch::kFloat && (dtype != torch::kBFloat16 || !CpuHasBf16Dot())) return false;
  if (x.dim() != 2 || x.size(0) > (dtype == torch::kFloat ? kFewRowsMax : kFewRowsMaxBf16)) return false;
  return x.is_contiguous() && same(block.router->weight) && same(p->fc1->weight) && same(p->fc2->weight) &&
         p->fc1->bias.defined() && p->fc2->bias.defined() && same(p->fc1->bias) && same(p->fc2->bias) &&
         !block.router->bias.defined() && block.router->weight.is_contiguous() && p->fc1->weight.is_contiguous() &&
         p->fc2->weight.is_contiguous() && p->fc1->bias.is_contiguous();
}

template <typename E>
RoutedTokens ScoreWithLoops(BlockImpl& block, const torch::Tensor& x) {
  using T = typename E::T;
  const int64_t N = x.size(0), d = x.size(1);
  const T* xp = Data<E>(x);
  RoutedTokens t;
  // r = w · x [N], on this thread: one output column.
  std::vector<T> r(static_cast<size_t>(N));
  E::Gemm(xp, N, Data<E>(block.router->weight), 1, d, r.data(), 0, 1);
  t.router.resize(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) t.router[static_cast<size_t>(i)] = E::Load(r[static_cast<size_t>(i)]);
  // logit = fc2(gelu(fc1(x / rms(x)) + b1)) + b2 [N], with fc1's bias and
  // GELU applied to each chunk of fc1's columns as it is computed.
  auto& p = *block.predictor;
  const int64_t H = p.fc1->weight.size(0);
  std::vector<T> xn(static_cast<size_t>(N * d)), g(static_cast<size_t>(N * H));
  E::Norm(xp, N, d, xn.data());
  const T* w1 = Data<E>(p.fc1->weight);
  const T* b1 = Data<E>(p.fc1->bias);
  ParallelChunks(H, ChunkFor(H, 2, 16), [&](int64_t begin, int64_t end) {
    E::Gemm(xn.data(), N, w1, H, d, g.data(), begin, end);
    E::Gelu(g.data(), N, H, begin, end, b1);
  });
  std::vector<T> logits(static_cast<size_t>(N));
  E::Gemm(g.data(), N, Data<E>(p.fc2->weight), 1, H, logits.data(), 0, 1);
  // Rounding the sum to bf16 keeps its sign, so the test needs no rounding.
  const float b2 = E::Load(Data<E>(p.fc2->bias)[0]);
  t.computes.resize(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    const bool computes = E::Load(logits[static_cast<size_t>(i)]) + b2 > 0.f;
    t.computes[static_cast<size_t>(i)] = computes ? 1 : 0;
    if (computes) t.rows.push_back(i);
  }
  return t;
}

// x[rows[i]] += r · delta[i], rounding as torch's bf16 ops would: the scale
// to the activations' dtype, then the product, then the sum.
template <typename E>
void AddWithLoops(const RoutedTokens& t, const torch::Tensor& delta, torch::Tensor& x) {
  using T = typename E::T;
  const int64_t d = x.size(1);
  T* xp = static_cast<T*>(x.data_ptr());
  const T* dp = Data<E>(delta);
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const int64_t row = t.rows[i];
    const float r = E::Round(t.router[static_cast<size_t>(row)]);
    T* xr = xp + row * d;
    const T* dr = dp + static_cast<int64_t>(i) * d;
    for (int64_t k = 0; k < d; ++k) xr[k] = E::Store(E::Load(xr[k]) + E::Round(E::Load(dr[k]) * r));
  }
}

}  // namespace

std::vector<int64_t> RowsWhere(const torch::Tensor& mask) {
  auto m = mask.to(torch::kCPU).contiguous();
  const bool* p = m.data_ptr<bool>();
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < m.numel(); ++i) {
    if (p[i]) rows.push_back(i);
  }
  return rows;
}

RoutedTokens ScoreRoutedTokens(BlockImpl& block, const torch::Tensor& x) {
  if (TakesLoops(block, x, x.scalar_type())) {
    return x.scalar_type() == torch::kFloat ? ScoreWithLoops<F32>(block, x) : ScoreWithLoops<Bf16>(block, x);
  }
  const int64_t N = x.size(0);
  RoutedTokens t;
  auto r = Linear(block.router, x).squeeze(-1).to(torch::kCPU, torch::kFloat).contiguous();  // [N]
  auto sel = (block.predictor(x) > 0).to(torch::kCPU).contiguous();                          // [N] bool
  t.router.assign(r.data_ptr<float>(), r.data_ptr<float>() + N);
  const bool* s = sel.data_ptr<bool>();
  t.computes.assign(s, s + N);
  t.rows = RowsWhere(sel);
  return t;
}

torch::Tensor AddRoutedDelta(torch::Tensor x, const RoutedTokens& t, const torch::Tensor& delta) {
  TORCH_CHECK(x.dim() == 2 && static_cast<int64_t>(t.router.size()) == x.size(0), "AddRoutedDelta: x [N, d] with N = ", t.router.size());
  TORCH_CHECK(delta.dim() == 2 && delta.size(0) == static_cast<int64_t>(t.rows.size()) && delta.size(1) == x.size(1),
              "AddRoutedDelta: delta [M, d] with M = ", t.rows.size(), " and d = ", x.size(1));
  if (x.is_contiguous() && delta.is_contiguous()) {
    if (InferenceF32OnCpu(x, delta)) {
      AddWithLoops<F32>(t, delta, x);
      return x;
    }
    if (InferenceBf16OnCpu(x, delta)) {
      AddWithLoops<Bf16>(t, delta, x);
      return x;
    }
  }
  auto idx = torch::tensor(t.rows, torch::TensorOptions().dtype(torch::kLong));                                         // [M] on the CPU
  auto r = torch::from_blob(const_cast<float*>(t.router.data()), {static_cast<int64_t>(t.router.size())}, torch::kFloat);  // [N]
  auto scale = r.index_select(0, idx).to(delta.device(), delta.scalar_type()).unsqueeze(-1);                            // [M, 1]
  return x.index_add(0, idx.to(x.device()), delta * scale);
}

}  // namespace modserve
