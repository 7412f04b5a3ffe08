// FailingAllocator: fault injection for tests of what code does when memory
// runs out. The test binary that links failing_allocator.cpp replaces the
// global operator new; after FailAllocationAfter(n), the calling thread's
// (n+1)-th allocation throws std::bad_alloc once, and every allocation after
// it succeeds again. Looping n from 0 until a call no longer throws runs the
// call through a failure at each of its allocations in turn.
//
// Thread-safety: the countdown is per thread; other threads never fail.
#pragma once

#include <cstdint>

namespace modserve::testing {

void FailAllocationAfter(int64_t n);
void StopFailingAllocations();
bool AllocationFailed();  // whether the armed failure has happened on this thread

}  // namespace modserve::testing
