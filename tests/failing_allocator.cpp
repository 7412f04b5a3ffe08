#include "failing_allocator.h"

#include <cstdlib>
#include <new>

namespace modserve::testing {
namespace {
thread_local int64_t allocations_left = -1;  // -1: not armed
thread_local bool failed = false;
}  // namespace

void FailAllocationAfter(int64_t n) {
  allocations_left = n;
  failed = false;
}
void StopFailingAllocations() { allocations_left = -1; }
bool AllocationFailed() { return failed; }

}  // namespace modserve::testing

void* operator new(std::size_t size) {
  int64_t& left = modserve::testing::allocations_left;
  if (left == 0) {
    left = -1;
    modserve::testing::failed = true;
    throw std::bad_alloc();
  }
  if (left > 0) --left;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
// The nothrow forms (std::stable_sort's buffer, say) must come from the same
// allocator as the deletes above.
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return ::operator new(size);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept { return ::operator new(size, tag); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
