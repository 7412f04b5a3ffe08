// MoveWeightsToHugePages: moves a module's CPU parameters and buffers into one
// block of memory aligned to 2 MiB and advised for transparent huge pages
// (madvise MADV_HUGEPAGE), for inference.
//
// A decode step reads every weight once, and at a few rows per matmul that
// read is what a step costs (engine/few_row_gemm.h). On 4 KiB pages the reads
// of a 48 MB layer cross 12,000 pages, each a TLB miss and a stop for the
// hardware prefetchers; on 2 MiB pages they cross 24. Values, shapes, dtypes
// and parameter identity (and shared storage between tensors) are unchanged;
// only where the bytes live. Where the kernel gives no huge pages
// (transparent_hugepage set to "never", or no THP at all) the block is
// ordinary memory and nothing else changes.
//
// Thread-safety: call before other threads use the module (the engine does,
// at start-up); the module must not be used concurrently during the move.
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace modserve {

struct HugePageWeights {
  int64_t tensors = 0;     // parameters and buffers re-pointed at the block
  int64_t bytes = 0;       // size of the block, a multiple of 2 MiB
  bool advised = false;    // madvise(MADV_HUGEPAGE) accepted the block
};

HugePageWeights MoveWeightsToHugePages(torch::nn::Module& module);

}  // namespace modserve
