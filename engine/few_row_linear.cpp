#include "engine/few_row_linear.h"

#include "engine/few_row_gemm.h"
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

torch::Tensor Linear(const torch::nn::Linear& layer, const torch::Tensor& x) {
  const torch::Tensor& w = layer->weight;  // [out, in]
  if (!TakesFewRowPath(x, w)) return torch::nn::functional::linear(x, w, layer->bias);
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
    ParallelChunks(N, chunk, [&](int64_t begin, int64_t end) { FewRowGemmBf16(xp, M, wp, N, K, yp, begin, end); });
  } else {
    const float* xp = x2.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    ParallelChunks(N, chunk, [&](int64_t begin, int64_t end) { FewRowGemm(xp, M, wp, N, K, yp, begin, end); });
  }
  if (layer->bias.defined()) y.add_(layer->bias);
  return y.view(shape);
}

}  // namespace modserve
