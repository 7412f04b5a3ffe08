#include "engine/few_row_linear.h"

#include "engine/few_row_gemm.h"
#include "engine/gelu_columns.h"
#include "engine/parallel_chunks.h"

namespace modserve {

namespace {
// Both `dtype` on the CPU, and no gradient wanted.
bool InferenceOnCpu(const torch::Tensor& a, const torch::Tensor& b, torch::ScalarType dtype) {
  if (torch::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad())) return false;
  return a.device().is_cpu() && b.device().is_cpu() && a.scalar_type() == dtype && b.scalar_type() == dtype;
}
}  // namespace

bool InferenceF32OnCpu(const torch::Tensor& a, const torch::Tensor& b) { return InferenceOnCpu(a, b, torch::kFloat); }

bool InferenceBf16OnCpu(const torch::Tensor& a, const torch::Tensor& b) { return InferenceOnCpu(a, b, torch::kBFloat16); }

bool TakesFewRowPath(const torch::Tensor& x, const torch::Tensor& weight) {
  if (x.dim() < 1 || weight.dim() != 2 || x.size(-1) != weight.size(1) || !weight.is_contiguous()) return false;
  const int64_t K = weight.size(1);
  if (K <= 0) return false;
  if (InferenceF32OnCpu(x, weight)) return x.numel() / K <= kFewRowsMax;
  return InferenceBf16OnCpu(x, weight) && CpuHasBf16Dot() && x.numel() / K <= kFewRowsMaxBf16;
}

namespace {

// x · weightᵀ (+ bias), then GELU if `gelu`: on the few-row path each chunk of
// output columns gets its bias and GELU as soon as it is computed.
torch::Tensor Project(const torch::nn::Linear& layer, const torch::Tensor& x, bool gelu) {
  const torch::Tensor& w = layer->weight;  // [out, in]
  const torch::Tensor& bias = layer->bias;
  const bool bias_in_chunks = !bias.defined() || (bias.is_contiguous() && bias.scalar_type() == w.scalar_type());
  if (!TakesFewRowPath(x, w) || (gelu && !bias_in_chunks)) {
    auto y = torch::nn::functional::linear(x, w, bias);
    return gelu ? torch::nn::functional::gelu(y) : y;
  }
  const int64_t N = w.size(0), K = w.size(1);
  auto x2 = x.reshape({-1, K}).contiguous();  // [M, in]
  const int64_t M = x2.size(0);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = N;
  if (M == 0) return torch::zeros(shape, x.options());
  auto y = torch::empty({M, N}, x.options());  // [M, out]
  // Columns per chunk: whole 4-column tiles, about 8 chunks per thread so the
  // others can take over from a thread that is held up.
  const int64_t chunk = ChunkFor(N, 8, 16);
  if (x.scalar_type() == torch::kBFloat16) {
    const auto* xp = static_cast<const uint16_t*>(x2.data_ptr());
    const auto* wp = static_cast<const uint16_t*>(w.data_ptr());
    auto* yp = static_cast<uint16_t*>(y.data_ptr());
    const auto* bp = bias.defined() ? static_cast<const uint16_t*>(bias.data_ptr()) : nullptr;
    ParallelChunks(N, chunk, [&](int64_t begin, int64_t end) {
      FewRowGemmBf16(xp, M, wp, N, K, yp, begin, end);
      if (gelu) GeluColumnsBf16(yp, M, N, begin, end, bp);
    });
  } else {
    const float* xp = x2.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
    ParallelChunks(N, chunk, [&](int64_t begin, int64_t end) {
      FewRowGemm(xp, M, wp, N, K, yp, begin, end);
      if (gelu) GeluColumns(yp, M, N, begin, end, bp);
    });
  }
  if (bias.defined() && !gelu) y.add_(bias);
  return y.view(shape);
}

}  // namespace

torch::Tensor Linear(const torch::nn::Linear& layer, const torch::Tensor& x) { return Project(layer, x, false); }

torch::Tensor LinearGelu(const torch::nn::Linear& layer, const torch::Tensor& x) { return Project(layer, x, true); }

}  // namespace modserve
