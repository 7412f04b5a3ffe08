// TuneAllocatorForDecoding: glibc malloc settings for a process that runs
// engine steps in a loop. Batched decode allocates large temporaries (the
// gathered K/V) every step; with glibc's defaults they are mmapped and
// unmapped each time and page faults dominate the step. Keeping them on the
// heap (mmap threshold 32 MiB, trim threshold 256 MiB) removes that.
//
// Thread-safety: call once at start-up, before other threads allocate.
#pragma once

#include <malloc.h>

namespace modserve {

inline void TuneAllocatorForDecoding() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

}  // namespace modserve
