// modserve::Linear: the few-row kernel gives torch::linear's results where it
// applies (f32, and bf16 where the CPU has AVX512-BF16), and everything else
// (gradients, mixed dtypes, long inputs) still goes through torch::linear.
#include "engine/few_row_linear.h"

#include <gtest/gtest.h>

#include "engine/few_row_gemm.h"

namespace modserve {
namespace {

torch::nn::Linear MakeLinear(int64_t in, int64_t out, bool bias) {
  torch::manual_seed(11);
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

TEST(FewRowLinear, MatchesTorchLinearForFewRowsWithAndWithoutBias) {
  torch::NoGradGuard no_grad;
  for (bool bias : {false, true}) {
    auto layer = MakeLinear(96, 40, bias);
    for (int64_t rows : {int64_t{1}, int64_t{3}, int64_t{4}, int64_t{17}, kFewRowsMax}) {
      auto x = torch::randn({rows, 96});
      ASSERT_TRUE(TakesFewRowPath(x, layer->weight)) << rows;
      auto want = torch::nn::functional::linear(x, layer->weight, layer->bias);
      EXPECT_TRUE(torch::allclose(Linear(layer, x), want, 1e-5, 1e-5)) << "rows " << rows << " bias " << bias;
    }
  }
}

TEST(FewRowLinear, Bf16MatchesTorchLinearWhereTheCpuHasBf16Dot) {
  torch::NoGradGuard no_grad;
  auto layer = MakeLinear(96, 40, true);
  layer->to(torch::kBFloat16);
  auto x = torch::randn({5, 96}).to(torch::kBFloat16);
  EXPECT_EQ(TakesFewRowPath(x, layer->weight), CpuHasBf16Dot());
  EXPECT_FALSE(TakesFewRowPath(torch::randn({kFewRowsMaxBf16 + 1, 96}).to(torch::kBFloat16), layer->weight));
  if (!CpuHasBf16Dot()) GTEST_SKIP() << "this CPU has no AVX512-BF16: bf16 stays on torch::linear";
  for (int64_t rows : {int64_t{1}, int64_t{4}, int64_t{7}, kFewRowsMaxBf16}) {
    auto xr = torch::randn({rows, 96}).to(torch::kBFloat16);
    auto y = Linear(layer, xr);
    ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
    auto want = torch::nn::functional::linear(xr, layer->weight, layer->bias);  // oneDNN
    EXPECT_TRUE(torch::allclose(y.to(torch::kFloat), want.to(torch::kFloat), 2e-2, 2e-2)) << "rows " << rows;
  }
}

// LinearGelu: the bias and GELU applied to each chunk of columns equal
// torch's gelu(linear(x)), in f32 to float rounding and in bf16 to one bf16
// step (torch's own erf differs from ours in the last float bits, which can
// move a bf16 rounding); long inputs and gradients take torch's ops.
TEST(FewRowLinear, LinearGeluMatchesTorchsGeluOfLinear) {
  for (bool bias : {false, true}) {
    auto layer = MakeLinear(96, 72, bias);
    torch::NoGradGuard no_grad;
    for (int64_t rows : {int64_t{1}, int64_t{5}, int64_t{32}, kFewRowsMax + 3}) {
      auto x = torch::randn({rows, 96}) * 2;
      auto want = torch::nn::functional::gelu(torch::nn::functional::linear(x, layer->weight, layer->bias));
      EXPECT_TRUE(torch::allclose(LinearGelu(layer, x), want, 1e-5, 1e-5)) << "rows " << rows << " bias " << bias;
    }
    if (!CpuHasBf16Dot()) continue;
    layer->to(torch::kBFloat16);
    auto xb = (torch::randn({7, 96}) * 2).to(torch::kBFloat16);
    auto want = torch::nn::functional::gelu(Linear(layer, xb)).to(torch::kFloat);
    auto got = LinearGelu(layer, xb).to(torch::kFloat);
    EXPECT_TRUE(torch::allclose(got, want, 8e-3, 1e-5)) << "bf16, bias " << bias;
    EXPECT_GT(torch::eq(got, want).to(torch::kFloat).mean().item<float>(), 0.95f) << "bf16 rounds where torch's ops do";
  }
  auto layer = MakeLinear(96, 72, true);
  auto x = torch::randn({3, 96});
  auto y = LinearGelu(layer, x);  // gradients wanted: torch's ops
  EXPECT_TRUE(y.requires_grad());
  EXPECT_TRUE(torch::allclose(y, torch::nn::functional::gelu(torch::nn::functional::linear(x, layer->weight, layer->bias)), 1e-6, 1e-6));
}

TEST(FewRowLinear, KeepsLeadingDimensions) {
  torch::NoGradGuard no_grad;
  auto layer = MakeLinear(32, 24, true);
  auto x = torch::randn({2, 3, 32});  // [B, T, in]
  auto y = Linear(layer, x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 24}));
  EXPECT_TRUE(torch::allclose(y, layer->forward(x), 1e-5, 1e-5));
  EXPECT_EQ(Linear(layer, torch::randn({0, 32})).sizes(), (std::vector<int64_t>{0, 24}));
}

TEST(FewRowLinear, NonContiguousInputGivesTheSameResult) {
  torch::NoGradGuard no_grad;
  auto layer = MakeLinear(16, 8, false);
  auto x = torch::randn({16, 5}).t();  // [5, 16], not contiguous
  EXPECT_TRUE(torch::allclose(Linear(layer, x), layer->forward(x), 1e-5, 1e-5));
}

TEST(FewRowLinear, LeavesTrainingMixedDtypesAndLongInputsToTorch) {
  auto layer = MakeLinear(16, 8, true);
  auto x = torch::randn({4, 16}, torch::requires_grad());
  EXPECT_FALSE(TakesFewRowPath(x, layer->weight)) << "gradients need torch::linear";
  Linear(layer, x).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(torch::allclose(x.grad(), layer->weight.sum(0).expand({4, 16})));

  torch::NoGradGuard no_grad;
  EXPECT_TRUE(TakesFewRowPath(torch::randn({4, 16}), layer->weight));
  EXPECT_FALSE(TakesFewRowPath(torch::randn({kFewRowsMax + 1, 16}), layer->weight));
  EXPECT_FALSE(TakesFewRowPath(torch::randn({4, 16}).to(torch::kBFloat16), layer->weight)) << "bf16 input, f32 weight";
  EXPECT_FALSE(TakesFewRowPath(torch::randn({4, 15}), layer->weight));
}

}  // namespace
}  // namespace modserve
