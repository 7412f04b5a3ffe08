#include "engine/huge_page_weights.h"

#include <sys/mman.h>

#include <cstring>
#include <map>
#include <memory>
#include <utility>
#include <vector>

namespace modserve {

namespace {

constexpr int64_t kHugePage = int64_t{2} << 20;
constexpr int64_t kStorageAlign = 64;  // each storage starts on a cache line

int64_t RoundUp(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

// `bytes` (a multiple of kHugePage) of fresh anonymous memory at a kHugePage
// boundary, or null. Straight from mmap: memory malloc recycles may already
// be faulted in on small pages, which MADV_HUGEPAGE does not change.
void* MapAligned(int64_t bytes) {
  const auto len = static_cast<size_t>(bytes + kHugePage);
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  const auto lo = reinterpret_cast<uintptr_t>(m);
  const auto start = (lo + kHugePage - 1) / kHugePage * kHugePage;
  if (start > lo) munmap(m, start - lo);
  const uintptr_t tail = lo + len - (start + static_cast<uintptr_t>(bytes));
  if (tail > 0) munmap(reinterpret_cast<void*>(start + static_cast<uintptr_t>(bytes)), tail);
  return reinterpret_cast<void*>(start);
}

}  // namespace

HugePageWeights MoveWeightsToHugePages(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors;
  for (auto& p : module.parameters(/*recurse=*/true)) tensors.push_back(p);
  for (auto& b : module.buffers(/*recurse=*/true)) tensors.push_back(b);

  // One slot per distinct storage, so tensors that share one keep sharing it.
  struct Slot {
    int64_t offset = 0;
    int64_t nbytes = 0;
    torch::Tensor source;  // the storage's bytes, as a flat uint8 view
  };
  std::map<const c10::StorageImpl*, Slot> slots;
  int64_t total = 0;
  for (const auto& t : tensors) {
    if (!t.defined() || !t.device().is_cpu() || t.numel() == 0) continue;
    const auto& storage = t.storage();
    const c10::StorageImpl* key = storage.unsafeGetStorageImpl();
    if (slots.count(key) != 0) continue;
    Slot s;
    s.nbytes = static_cast<int64_t>(storage.nbytes());
    s.offset = total;
    s.source = torch::empty({0}, torch::TensorOptions().dtype(torch::kUInt8)).set_(storage, 0, {s.nbytes}, {1});
    total = RoundUp(total + s.nbytes, kStorageAlign);
    slots.emplace(key, std::move(s));
  }
  HugePageWeights report;
  if (slots.empty()) return report;
  report.bytes = RoundUp(total, kHugePage);
  void* raw = MapAligned(report.bytes);
  if (raw == nullptr) {
    report.bytes = 0;
    return report;  // left where they were
  }
  // Advised before the first touch, so the copy below faults in huge pages.
  report.advised = madvise(raw, static_cast<size_t>(report.bytes), MADV_HUGEPAGE) == 0;
  const auto len = static_cast<size_t>(report.bytes);
  std::shared_ptr<void> block(raw, [len](void* p) { munmap(p, len); });
  auto* base = static_cast<char*>(raw);

  // Each storage's bytes copied once; then every tensor is re-pointed at its
  // storage's copy with its own offset, sizes and strides.
  std::map<const c10::StorageImpl*, c10::Storage> moved;
  for (auto& [key, s] : slots) {
    std::memcpy(base + s.offset, s.source.data_ptr(), static_cast<size_t>(s.nbytes));
    auto keep = block;  // the block lives while any storage in it does
    auto bytes = torch::from_blob(base + s.offset, {s.nbytes}, [keep](void*) mutable { keep.reset(); },
                                  torch::TensorOptions().dtype(torch::kUInt8));
    moved.emplace(key, bytes.storage());
  }
  for (auto& t : tensors) {
    if (!t.defined() || !t.device().is_cpu() || t.numel() == 0) continue;
    auto it = moved.find(t.storage().unsafeGetStorageImpl());
    if (it == moved.end()) continue;  // the same tensor listed twice: re-pointed already
    auto now = torch::empty({0}, t.options().requires_grad(false)).set_(it->second, t.storage_offset(), t.sizes(), t.strides());
    t.set_data(now);
    ++report.tensors;
  }
  return report;
}

}  // namespace modserve
