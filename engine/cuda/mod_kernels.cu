#include "engine/cuda/mod_kernels.h"

#include <cuda_runtime.h>

#include <string>

#include "engine/cuda/kernel_indexing.h"

namespace modserve::kernels {

namespace {

Status Check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return Internal(std::string(what) + ": " + cudaGetErrorString(err));
}

Status Finish(const char* what) {
  MODSERVE_RETURN_IF_ERROR(Check(cudaGetLastError(), what));
  return Check(cudaDeviceSynchronize(), what);
}

constexpr int kScanThreads = 1024;

// One block scans the flags chunk by chunk (Hillis-Steele in shared memory).
__global__ void CompactKernel(const uint8_t* flags, int64_t n, int64_t* out, int64_t* count) {
  __shared__ int64_t scan[kScanThreads];
  __shared__ int64_t base;
  if (threadIdx.x == 0) base = 0;
  __syncthreads();
  for (int64_t start = 0; start < n; start += kScanThreads) {
    const int64_t i = start + threadIdx.x;
    const uint8_t f = i < n ? (flags[i] != 0) : 0;
    scan[threadIdx.x] = f;
    __syncthreads();
    for (int off = 1; off < kScanThreads; off <<= 1) {
      const int64_t add = threadIdx.x >= off ? scan[threadIdx.x - off] : 0;
      __syncthreads();
      scan[threadIdx.x] += add;
      __syncthreads();
    }
    if (i < n) CompactWrite(i, f, base + scan[threadIdx.x] - f, out);
    __syncthreads();
    if (threadIdx.x == kScanThreads - 1) base += scan[threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.x == 0) *count = base;
}

__global__ void GatherKernel(const float* x, const int64_t* idx, int64_t m, int64_t d, float* out) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < m * d) GatherElement(x, idx, e / d, e % d, d, out);
}

__global__ void ScatterAddKernel(float* x, const int64_t* idx, const float* w, const float* delta, int64_t m, int64_t d) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < m * d) ScatterAddElement(x, idx, w, delta, e / d, e % d, d);
}

constexpr int kAttnThreads = 128;

// Block (s, h): scores into shared memory, block max and sum, then the
// weighted sum of V, one output dimension per thread.
__global__ void PagedDecodeAttentionKernel(const float* q, const float* k_pool, const float* v_pool, const int32_t* tables,
                                           const int32_t* lengths, int64_t H, int64_t hd, int64_t bs, int64_t max_blocks,
                                           float scale, float* out) {
  extern __shared__ float scores[];  // [max_length]
  __shared__ float red[kAttnThreads];
  const int64_t s = blockIdx.x, h = blockIdx.y;
  const int64_t L = lengths[s];
  const int32_t* table = tables + s * max_blocks;
  const float* qv = q + (s * H + h) * hd;
  for (int64_t t = threadIdx.x; t < L; t += blockDim.x) {
    const float* kv = k_pool + (PagedSlot(table, t, bs) * H + h) * hd;
    float dot = 0.f;
    for (int64_t c = 0; c < hd; ++c) dot += qv[c] * kv[c];
    scores[t] = dot * scale;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t t = threadIdx.x; t < L; t += blockDim.x) mx = fmaxf(mx, scores[t]);
  red[threadIdx.x] = mx;
  __syncthreads();
  for (int off = blockDim.x / 2; off > 0; off >>= 1) {
    if (threadIdx.x < off) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + off]);
    __syncthreads();
  }
  mx = red[0];
  __syncthreads();
  float sum = 0.f;
  for (int64_t t = threadIdx.x; t < L; t += blockDim.x) {
    scores[t] = __expf(scores[t] - mx);
    sum += scores[t];
  }
  red[threadIdx.x] = sum;
  __syncthreads();
  for (int off = blockDim.x / 2; off > 0; off >>= 1) {
    if (threadIdx.x < off) red[threadIdx.x] += red[threadIdx.x + off];
    __syncthreads();
  }
  const float inv = 1.f / red[0];
  for (int64_t c = threadIdx.x; c < hd; c += blockDim.x) {
    float acc = 0.f;
    for (int64_t t = 0; t < L; ++t) acc += scores[t] * v_pool[(PagedSlot(table, t, bs) * H + h) * hd + c];
    out[(s * H + h) * hd + c] = acc * inv;
  }
}

unsigned Blocks(int64_t elements, int threads) { return static_cast<unsigned>((elements + threads - 1) / threads); }

}  // namespace

bool CudaDeviceAvailable(std::string* why_not) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why_not) *why_not = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    return false;
  }
  if (n == 0) {
    if (why_not) *why_not = "no CUDA device";
    return false;
  }
  return true;
}

Status CompactRoutes(const uint8_t* flags, int64_t n, int64_t* out_idx, int64_t* count) {
  int64_t* dev_count = nullptr;
  MODSERVE_RETURN_IF_ERROR(Check(cudaMalloc(&dev_count, sizeof(int64_t)), "CompactRoutes: cudaMalloc"));
  CompactKernel<<<1, kScanThreads>>>(flags, n, out_idx, dev_count);
  Status st = Finish("CompactRoutes");
  if (st.ok()) st = Check(cudaMemcpy(count, dev_count, sizeof(int64_t), cudaMemcpyDeviceToHost), "CompactRoutes: copy count");
  cudaFree(dev_count);
  return st;
}

Status GatherRows(const float* x, const int64_t* idx, int64_t m, int64_t d, float* out) {
  if (m * d == 0) return Status::Ok();
  GatherKernel<<<Blocks(m * d, 256), 256>>>(x, idx, m, d, out);
  return Finish("GatherRows");
}

Status ScaleScatterAdd(float* x, const int64_t* idx, const float* w, const float* delta, int64_t m, int64_t d) {
  if (m * d == 0) return Status::Ok();
  ScatterAddKernel<<<Blocks(m * d, 256), 256>>>(x, idx, w, delta, m, d);
  return Finish("ScaleScatterAdd");
}

Status PagedDecodeAttention(const float* q, const float* k_pool, const float* v_pool, const int32_t* block_tables,
                            const int32_t* lengths, int64_t n, int64_t n_heads, int64_t head_dim, int64_t block_size,
                            int64_t max_blocks, int64_t max_length, float scale, float* out) {
  if (n == 0) return Status::Ok();
  if (max_length * static_cast<int64_t>(sizeof(float)) > 48 * 1024) {
    return InvalidArgument("PagedDecodeAttention: max_length " + std::to_string(max_length) + " exceeds the 12,288 tokens of shared memory");
  }
  dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(n_heads));
  PagedDecodeAttentionKernel<<<grid, kAttnThreads, static_cast<size_t>(max_length) * sizeof(float)>>>(
      q, k_pool, v_pool, block_tables, lengths, n_heads, head_dim, block_size, max_blocks, scale, out);
  return Finish("PagedDecodeAttention");
}

}  // namespace modserve::kernels
