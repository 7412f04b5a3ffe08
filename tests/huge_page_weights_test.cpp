// MoveWeightsToHugePages: parameters and buffers keep their values, shapes,
// identity and shared storage, and end up in one 2 MiB-aligned block, on huge
// pages where the kernel's transparent huge pages allow it.

#include "engine/huge_page_weights.h"

#include "engine/allocator_tuning.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

namespace modserve {
namespace {

struct Weights : torch::nn::Module {
  Weights() {
    big = register_parameter("big", torch::randn({1024, 1024}));   // 4 MiB
    small = register_parameter("small", torch::randn({3, 5}));
    frozen = register_parameter("frozen", torch::randn({7}), /*requires_grad=*/false);
    row = register_parameter("row", big.detach().narrow(0, 10, 2));  // shares big's storage
    steps = register_buffer("steps", torch::arange(9, torch::kLong));
  }
  torch::Tensor big, small, frozen, row, steps;
};

// AnonHugePages of the mapping that holds `p`, in kB; -1 if not found.
int64_t AnonHugePagesKb(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto addr = reinterpret_cast<uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= addr && addr < hi;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) return std::stoll(line.substr(14));
  }
  return -1;
}

TEST(HugePageWeights, KeepsValuesIdentityAndSharingInOneAlignedBlock) {
  Weights w;
  const auto big = w.big.clone(), small = w.small.clone(), frozen = w.frozen.clone(), steps = w.steps.clone();
  const auto* big_impl = w.big.unsafeGetTensorImpl();
  const HugePageWeights r = MoveWeightsToHugePages(w);

  EXPECT_EQ(r.tensors, 5);
  EXPECT_EQ(r.bytes % (2 << 20), 0);
  EXPECT_GE(r.bytes, 4 << 20);
  EXPECT_EQ(w.named_parameters()["big"].unsafeGetTensorImpl(), big_impl) << "the module's own tensor, re-pointed, not replaced";
  EXPECT_TRUE(torch::equal(w.named_parameters()["big"], big));
  EXPECT_TRUE(torch::equal(w.named_parameters()["small"], small));
  EXPECT_TRUE(torch::equal(w.named_parameters()["frozen"], frozen));
  EXPECT_TRUE(torch::equal(w.named_buffers()["steps"], steps));
  EXPECT_TRUE(w.named_parameters()["big"].requires_grad());
  EXPECT_FALSE(w.named_parameters()["frozen"].requires_grad());

  const auto* base = static_cast<const char*>(w.big.data_ptr());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(base) % (2 << 20), 0u) << "the first storage opens the block";
  for (const auto& t : {w.small, w.frozen, w.steps}) {
    const auto* p = static_cast<const char*>(t.data_ptr());
    EXPECT_GE(p, base);
    EXPECT_LT(p, base + r.bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  }
  // row still views big's storage: a write through one shows in the other.
  EXPECT_EQ(w.row.data_ptr<float>(), w.big.data_ptr<float>() + 10 * 1024);
  {
    torch::NoGradGuard ng;
    w.big[11][3] = 42.f;
  }
  EXPECT_EQ(w.row[1][3].item<float>(), 42.f);
}

TEST(HugePageWeights, GetsHugePagesWhereTheKernelGivesThem) {
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(thp, mode);
  if (mode.find("[never]") != std::string::npos || mode.empty()) {
    GTEST_SKIP() << "transparent huge pages are off on this machine (" << (mode.empty() ? "no THP" : mode) << ")";
  }
  // As in the server: heap memory malloc hands out again, already faulted in
  // on small pages.
  TuneAllocatorForDecoding();
  { auto churn = torch::ones({int64_t{4} << 20}); }
  Weights w;
  const HugePageWeights r = MoveWeightsToHugePages(w);
  ASSERT_TRUE(r.advised);
  EXPECT_GT(AnonHugePagesKb(w.big.data_ptr()), 0) << "THP mode " << mode;
}

}  // namespace
}  // namespace modserve
