// modserve::Linear: the few-row kernel gives torch::linear's results where it
// applies, and everything else (gradients, bf16, long inputs) still goes
// through torch::linear.
#include "engine/few_row_linear.h"

#include <gtest/gtest.h>

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

TEST(FewRowLinear, LeavesTrainingBf16AndLongInputsToTorch) {
  auto layer = MakeLinear(16, 8, true);
  auto x = torch::randn({4, 16}, torch::requires_grad());
  EXPECT_FALSE(TakesFewRowPath(x, layer->weight)) << "gradients need torch::linear";
  Linear(layer, x).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(torch::allclose(x.grad(), layer->weight.sum(0).expand({4, 16})));

  torch::NoGradGuard no_grad;
  EXPECT_TRUE(TakesFewRowPath(torch::randn({4, 16}), layer->weight));
  EXPECT_FALSE(TakesFewRowPath(torch::randn({kFewRowsMax + 1, 16}), layer->weight));
  EXPECT_FALSE(TakesFewRowPath(torch::randn({4, 16}).to(torch::kBFloat16), layer->weight));
  EXPECT_FALSE(TakesFewRowPath(torch::randn({4, 15}), layer->weight));
}

}  // namespace
}  // namespace modserve
