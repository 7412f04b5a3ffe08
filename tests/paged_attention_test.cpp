// PagedAttention's in-place path (f32 and bf16 CPU caches) against the torch
// ops that CUDA caches run, on the same cache: decode tokens and prefill
// chunks of several sequences in one call, sequences that skip the layer,
// and query rows out of order.
#include "engine/paged_attention.h"

#include <random>

#include <gtest/gtest.h>

namespace modserve {
namespace {

void ExpectPathsAgree(torch::ScalarType dtype) {
  const int64_t H = 3, hd = 32, bs = 4;
  KvCache cache({128, bs, 2}, H, hd, torch::TensorOptions().dtype(dtype));
  torch::manual_seed(7);
  std::mt19937 rng(8);
  // (cached before this step, new tokens): decode, prefill, skipped, first prefill, decode.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{9, 1}, {13, 6}, {5, 0}, {0, 11}, {30, 1}};
  std::vector<AttentionChunk> chunks;
  int64_t rows = 0;
  for (size_t s = 0; s < shapes.size(); ++s) {
    const auto id = static_cast<SeqId>(s);
    ASSERT_TRUE(cache.manager().AddSequence(id).ok());
    const auto [prev, count] = shapes[s];
    if (prev + count == 0) continue;
    auto slots = cache.manager().Append(id, 1, prev + count);
    ASSERT_TRUE(slots.ok());
    cache.Write(*slots, torch::randn({prev + count, H, hd}), torch::randn({prev + count, H, hd}));
    if (count > 0) chunks.push_back({id, rows, count, prev});
    rows += count;
  }
  auto q = torch::randn({rows, H, hd}).to(dtype);
  auto in_place = PagedAttention(cache, 1, q, chunks);
  auto torch_ops = PagedAttentionWithTorchOps(cache, 1, q, chunks);
  ASSERT_EQ(in_place.sizes(), q.sizes());
  ASSERT_EQ(in_place.scalar_type(), dtype);
  const double tol = dtype == torch::kFloat ? 1e-5 : 1e-2;
  EXPECT_TRUE(torch::allclose(in_place.to(torch::kFloat), torch_ops.to(torch::kFloat), tol, tol));

  // The same chunks listed in another order: each row's result follows it.
  std::vector<AttentionChunk> shuffled(chunks.rbegin(), chunks.rend());
  EXPECT_TRUE(torch::allclose(PagedAttention(cache, 1, q, shuffled).to(torch::kFloat), in_place.to(torch::kFloat), 1e-6, 1e-6));
}

TEST(PagedAttention, InPlaceMatchesTheTorchOpsOnAnF32Cache) { ExpectPathsAgree(torch::kFloat); }
TEST(PagedAttention, InPlaceMatchesTheTorchOpsOnABf16Cache) { ExpectPathsAgree(torch::kBFloat16); }

// KvCache::Write copies rows itself where it can (k and v as views into one
// QKV tensor, f32 into an f32 or bf16 pool, bf16 into bf16): the pools must
// end up exactly as index_copy_ with torch's conversion leaves them, and
// inputs it cannot copy row by row (a transposed k) take index_copy_.
TEST(KvCacheWrite, RowCopiesLeaveThePoolsAsIndexCopyDoes) {
  const int64_t H = 3, hd = 8, bs = 4, n = 5;
  const std::vector<int64_t> slots = {9, 2, 14, 3, 0};
  for (auto [from, to] : {std::pair{torch::kFloat, torch::kFloat}, std::pair{torch::kFloat, torch::kBFloat16},
                          std::pair{torch::kBFloat16, torch::kBFloat16}}) {
    KvCache cache({4, bs, 1}, H, hd, torch::TensorOptions().dtype(to));
    torch::manual_seed(11);
    auto qkv = torch::randn({n, 3, H, hd}).to(from);  // [n, 3, H, hd]
    auto k = qkv.select(1, 1), v = qkv.select(1, 2);   // [n, H, hd], rows 3 * H * hd apart
    cache.Write(slots, k, v);
    auto idx = torch::tensor(slots, torch::kLong);
    auto want_k = torch::zeros_like(cache.k_pool()).index_copy_(0, idx, k.to(to));
    auto want_v = torch::zeros_like(cache.v_pool()).index_copy_(0, idx, v.to(to));
    EXPECT_TRUE(torch::equal(cache.k_pool(), want_k)) << from << " into " << to;
    EXPECT_TRUE(torch::equal(cache.v_pool(), want_v)) << from << " into " << to;

    auto kt = torch::randn({n, hd, H}).to(from).transpose(1, 2);  // [n, H, hd], not row-contiguous
    cache.Write(slots, kt, v);
    EXPECT_TRUE(torch::equal(cache.k_pool(), torch::zeros_like(want_k).index_copy_(0, idx, kt.to(to))));
  }
}

}  // namespace
}  // namespace modserve
