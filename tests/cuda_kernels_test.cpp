// The CUDA kernels against their CPU references on random inputs. Built when
// nvcc is found; each test skips, saying why, where no GPU can be used.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <random>

#include "engine/cuda/mod_kernels.h"
#include "engine/kv_cache.h"
#include "engine/paged_attention.h"

namespace modserve::kernels {
namespace {

#define REQUIRE_GPU()                                              \
  do {                                                             \
    std::string why;                                               \
    if (!CudaDeviceAvailable(&why)) GTEST_SKIP() << "no GPU: " << why; \
  } while (0)

template <typename T>
T* Upload(const std::vector<T>& host) {
  T* dev = nullptr;
  EXPECT_EQ(cudaMalloc(&dev, std::max<size_t>(1, host.size()) * sizeof(T)), cudaSuccess);
  if (!host.empty()) {
    EXPECT_EQ(cudaMemcpy(dev, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  return dev;
}

template <typename T>
std::vector<T> Download(const T* dev, size_t n) {
  std::vector<T> host(n);
  if (n) {
    EXPECT_EQ(cudaMemcpy(host.data(), dev, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  }
  return host;
}

std::vector<float> RandomFloats(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

TEST(CudaKernels, CompactRoutesMatchesTheCpuReference) {
  REQUIRE_GPU();
  std::mt19937 rng(1);
  for (int64_t n : {1, 5, 1023, 1024, 1025, 70000}) {
    std::vector<uint8_t> flags(static_cast<size_t>(n));
    std::vector<int64_t> expected;
    for (int64_t i = 0; i < n; ++i) {
      flags[static_cast<size_t>(i)] = rng() % 8 == 0;
      if (flags[static_cast<size_t>(i)]) expected.push_back(i);
    }
    auto* dflags = Upload(flags);
    auto* dout = Upload(std::vector<int64_t>(static_cast<size_t>(n), -1));
    int64_t count = -1;
    ASSERT_TRUE(CompactRoutes(dflags, n, dout, &count).ok());
    EXPECT_EQ(count, static_cast<int64_t>(expected.size()));
    EXPECT_EQ(Download(dout, expected.size()), expected) << "n=" << n;
    cudaFree(dflags);
    cudaFree(dout);
  }
}

TEST(CudaKernels, GatherAndScaleScatterAddMatchTheCpuReference) {
  REQUIRE_GPU();
  std::mt19937 rng(2);
  const int64_t n = 300, d = 96;
  auto x = RandomFloats(static_cast<size_t>(n * d), rng);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < n; ++i)
    if (rng() % 5 == 0) idx.push_back(i);
  const auto m = static_cast<int64_t>(idx.size());
  auto w = RandomFloats(static_cast<size_t>(m), rng);
  auto delta = RandomFloats(static_cast<size_t>(m * d), rng);
  auto tx = torch::from_blob(x.data(), {n, d}).clone();
  auto tidx = torch::tensor(idx, torch::kLong);
  auto ref_gather = tx.index_select(0, tidx);
  auto ref_scatter = tx.index_add(0, tidx, torch::from_blob(delta.data(), {m, d}) * torch::from_blob(w.data(), {m, 1}));

  float* dx = Upload(x);
  int64_t* didx = Upload(idx);
  float* dw = Upload(w);
  float* ddelta = Upload(delta);
  float* dg = Upload(std::vector<float>(static_cast<size_t>(m * d)));
  ASSERT_TRUE(GatherRows(dx, didx, m, d, dg).ok());
  auto g = Download(dg, static_cast<size_t>(m * d));
  EXPECT_TRUE(torch::equal(torch::from_blob(g.data(), {m, d}), ref_gather));
  ASSERT_TRUE(ScaleScatterAdd(dx, didx, dw, ddelta, m, d).ok());
  auto y = Download(dx, static_cast<size_t>(n * d));
  EXPECT_TRUE(torch::allclose(torch::from_blob(y.data(), {n, d}), ref_scatter, 1e-6, 1e-6));
  for (void* p : {static_cast<void*>(dx), static_cast<void*>(didx), static_cast<void*>(dw), static_cast<void*>(ddelta), static_cast<void*>(dg)}) cudaFree(p);
}

TEST(CudaKernels, PagedDecodeAttentionMatchesTheCpuReference) {
  REQUIRE_GPU();
  std::mt19937 rng(3);
  const int64_t H = 4, hd = 32, bs = 8, n = 5;
  KvCache cache({64, bs, 1}, H, hd, torch::TensorOptions().dtype(torch::kFloat));
  std::vector<AttentionChunk> chunks;
  torch::manual_seed(4);
  auto q = torch::randn({n, H, hd});
  for (int64_t s = 0; s < n; ++s) {
    ASSERT_TRUE(cache.manager().AddSequence(s).ok());
    const int64_t len = 1 + static_cast<int64_t>(rng() % 50);
    auto slots = cache.manager().Append(s, 0, len);
    ASSERT_TRUE(slots.ok());
    cache.Write(*slots, torch::randn({len, H, hd}), torch::randn({len, H, hd}));
    chunks.push_back({s, s, 1, len - 1});  // the last cached token is this step's query token
  }
  auto ref = PagedAttention(cache, 0, q, chunks);  // [n, H, hd], the CPU reference
  // Flatten the block tables and pools for the kernel.
  int64_t max_blocks = 0, max_len = 0;
  for (int64_t s = 0; s < n; ++s) {
    max_blocks = std::max<int64_t>(max_blocks, static_cast<int64_t>(cache.manager().BlockTable(s, 0).size()));
    max_len = std::max(max_len, cache.manager().NumTokens(s, 0));
  }
  std::vector<int32_t> tables(static_cast<size_t>(n * max_blocks), 0), lengths;
  for (int64_t s = 0; s < n; ++s) {
    const auto& t = cache.manager().BlockTable(s, 0);
    for (size_t b = 0; b < t.size(); ++b) tables[static_cast<size_t>(s * max_blocks) + b] = static_cast<int32_t>(t[b]);
    lengths.push_back(static_cast<int32_t>(cache.manager().NumTokens(s, 0)));
  }
  std::vector<int64_t> all(64 * bs);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  auto [kpool, vpool] = cache.GatherSlots(torch::tensor(all, torch::kLong));
  kpool = kpool.contiguous();
  vpool = vpool.contiguous();
  std::vector<float> hk(kpool.data_ptr<float>(), kpool.data_ptr<float>() + kpool.numel());
  std::vector<float> hv(vpool.data_ptr<float>(), vpool.data_ptr<float>() + vpool.numel());
  auto qc = q.contiguous();
  std::vector<float> hq(qc.data_ptr<float>(), qc.data_ptr<float>() + qc.numel());
  float* dq = Upload(hq);
  float* dk = Upload(hk);
  float* dv = Upload(hv);
  int32_t* dt = Upload(tables);
  int32_t* dl = Upload(lengths);
  float* dout = Upload(std::vector<float>(static_cast<size_t>(n * H * hd)));
  ASSERT_TRUE(PagedDecodeAttention(dq, dk, dv, dt, dl, n, H, hd, bs, max_blocks, max_len, 1.0f / std::sqrt(float(hd)), dout).ok());
  auto out = Download(dout, static_cast<size_t>(n * H * hd));
  EXPECT_TRUE(torch::allclose(torch::from_blob(out.data(), {n, H, hd}), ref, 1e-4, 1e-5));
  for (void* p : {static_cast<void*>(dq), static_cast<void*>(dk), static_cast<void*>(dv), static_cast<void*>(dt), static_cast<void*>(dl),
                  static_cast<void*>(dout)})
    cudaFree(p);
}

}  // namespace
}  // namespace modserve::kernels
