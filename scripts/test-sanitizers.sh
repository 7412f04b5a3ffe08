#!/usr/bin/env bash
# Builds and runs the tests under sanitizers; any report fails the run.
# - AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/): the unit
#   tests and the end-to-end tests, the LibTorch ones included (engine,
#   server end to end with the shipped model and the mod-server process).
#   -O1 -g1 keeps the instrumented LibTorch files quick to compile.
#   (shipped_model_tests is left out: it re-measures the model's quality on
#   the validation split, which engine_tests' model code already covers.)
# - ThreadSanitizer (build-tsan/): the scheduler's tests, among them its
#   threads as the server runs them (step loop, submitting and cancelling
#   clients, sinks handing updates to the write dispatcher, drain) without
#   gRPC; and the guide cache's tests (lookups racing one compile). The
#   gRPC server tests are not run under TSan: Debian's libgrpc is
#   uninstrumented, and its call arenas reuse memory and hand work between
#   threads through atomics TSan cannot see, so every run reports hundreds of
#   races on gRPC's own objects (the code before this script's TSan step
#   showed the same); ASan covers those tests instead.
# Usage: scripts/test-sanitizers.sh [asan|tsan]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
which=${1:-all}
common=(-G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -g1" -DMODSERVE_ENABLE_CUDA=OFF)

if [[ "$which" == all || "$which" == asan ]]; then
  flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
  cmake -S . -B build-asan "${common[@]}" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
  targets=(core_tests scheduler_tests guide_cache_tests service_tests security_tests server_fake_engine_tests fuzz_regression_tests
           engine_tests server_e2e_tests)
  cmake --build build-asan -j"$(nproc)" --target "${targets[@]}" mod-server
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  for t in "${targets[@]}"; do
    echo "== $t (ASan + UBSan)"
    build-asan/bin/"$t" --gtest_brief=1
  done
fi

if [[ "$which" == all || "$which" == tsan ]]; then
  cmake -S . -B build-tsan "${common[@]}" -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" >/dev/null
  targets=(scheduler_tests guide_cache_tests)
  cmake --build build-tsan -j"$(nproc)" --target "${targets[@]}"
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
  for t in "${targets[@]}"; do
    echo "== $t (ThreadSanitizer)"
    build-tsan/bin/"$t" --gtest_brief=1
  done
fi
