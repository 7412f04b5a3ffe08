// Linear: a torch Linear layer's forward that, at inference, sends inputs with
// few rows to FewRowGemm (engine/few_row_gemm.h) instead of the general GEMM.
//
// Decode steps and routed layers multiply a few to a few dozen rows by each
// weight matrix; there the general GEMM spends most of its time repacking the
// weights, and FewRowGemm runs 1.5-3× faster (see `mod-bench --row-scan`).
// The kernel takes f32 CPU tensors with at most kFewRowsMax rows, and bf16
// ones with at most kFewRowsMaxBf16 where the CPU has AVX512-BF16, when no
// gradient is needed; anything else (training, mixed dtypes, CUDA, long
// prefill chunks) goes to torch::linear, so results and autograd are unchanged.
//
// Thread-safety: a pure function; it splits the output columns over the
// engine's kernel threads (engine/parallel_chunks.h).
#pragma once

#include <torch/torch.h>

namespace modserve {

// Inputs with more rows than this go to the general GEMM, which catches up
// with the kernel around here on the development machine.
constexpr int64_t kFewRowsMax = 128;
constexpr int64_t kFewRowsMaxBf16 = 32;  // bf16: oneDNN, from about here (see mod-bench --row-scan)

// y = x · weightᵀ (+ bias): x [..., in] -> [..., out].
torch::Tensor Linear(const torch::nn::Linear& layer, const torch::Tensor& x);
// gelu(x · weightᵀ (+ bias)), the exact GELU: on the few-row path the bias and
// GELU run on each chunk of columns as it is computed (engine/gelu_columns.h).
torch::Tensor LinearGelu(const torch::nn::Linear& layer, const torch::Tensor& x);

// Whether our f32 CPU kernels may stand in for torch ops on these tensors:
// both f32 on the CPU, and no gradient wanted (inference, or no-grad mode).
bool InferenceF32OnCpu(const torch::Tensor& a, const torch::Tensor& b);
// The same for bf16 tensors.
bool InferenceBf16OnCpu(const torch::Tensor& a, const torch::Tensor& b);

// Whether Linear would take the few-row kernel for these tensors.
bool TakesFewRowPath(const torch::Tensor& x, const torch::Tensor& weight);

}  // namespace modserve
