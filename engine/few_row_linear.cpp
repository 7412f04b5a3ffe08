#include "engine/few_row_linear.h"

#include "engine/few_row_gemm.h"
#include "engine/parallel_chunks.h"

namespace modserve {

bool InferenceF32OnCpu(const torch::Tensor& a, const torch::Tensor& b) {
  if (torch::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad())) return false;
  return a.device().is_cpu() && b.device().is_cpu() && a.scalar_type() == torch::kFloat && b.scalar_type() == torch::kFloat;
}

bool TakesFewRowPath(const torch::Tensor& x, const torch::Tensor& weight) {
  if (!InferenceF32OnCpu(x, weight)) return false;
  if (x.dim() < 1 || weight.dim() != 2 || x.size(-1) != weight.size(1) || !weight.is_contiguous()) return false;
  const int64_t K = weight.size(1);
  return K > 0 && x.numel() / K <= kFewRowsMax;
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
  const float* xp = x2.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // Columns per chunk: whole 4-column tiles, about 8 chunks per thread so the
  // others can take over from a thread that is held up.
  ParallelChunks(N, ChunkFor(N, 8, 16), [&](int64_t begin, int64_t end) { FewRowGemm(xp, M, wp, N, K, yp, begin, end); });
  if (layer->bias.defined()) y.add_(layer->bias);
  return y.view(shape);
}

}  // namespace modserve
