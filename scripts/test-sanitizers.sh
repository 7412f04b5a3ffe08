#!/usr/bin/env bash
# Builds the torch-free test binaries (core, scheduler, service, and the
# whole server with a fake engine) with AddressSanitizer + UndefinedBehavior-
# Sanitizer into build-asan/ and runs them; any report fails the run.
# (The LibTorch binaries are left out: instrumenting every file that includes
# torch headers takes ~25 minutes on 2 cores.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMODSERVE_ENABLE_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
targets=(core_tests scheduler_tests service_tests server_fake_engine_tests)
cmake --build build-asan -j"$(nproc)" --target "${targets[@]}"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in "${targets[@]}"; do
  echo "== $t (ASan + UBSan)"
  build-asan/bin/"$t" --gtest_brief=1
done
