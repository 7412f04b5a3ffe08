// libFuzzer entry point: one binary per target, chosen at compile time by
// MODSERVE_FUZZ_TARGET (an index into modserve::fuzz::Targets()).
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  modserve::fuzz::Targets()[MODSERVE_FUZZ_TARGET].run(data, size);
  return 0;
}
