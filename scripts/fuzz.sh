#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer into build-fuzz/, and runs each for a bounded
# time from its seed corpus (tests/fuzz/corpus/<target>/, copied: the run's
# finds stay in build-fuzz/). A crash, leak, sanitizer report or broken
# invariant fails the run and leaves the input in build-fuzz/artifacts/;
# copy it into tests/fuzz/corpus/<target>/ to keep it as a regression test.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
scripts/install-deps.sh
need=()
for p in clang libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  echo "fuzz: installing ${need[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DMODSERVE_ENABLE_CUDA=OFF -DMODSERVE_BUILD_FUZZERS=ON -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
targets=(request_validation utf8_stream safetensors_header server_config token_guide)
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}"
mkdir -p build-fuzz/artifacts
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# One target: its run's log in build-fuzz/<target>.log; non-zero on a find.
fuzz_one() {
  local t=$1 corpus=build-fuzz/corpus/$1
  mkdir -p "$corpus"
  cp -n tests/fuzz/corpus/"$t"/* "$corpus"/
  build-fuzz/bin/fuzz_"$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix=build-fuzz/artifacts/"$t"- -print_final_stats=1 "$corpus" 2>build-fuzz/"$t".log
}
# Each fuzzer runs on one core, so the targets run one per core at a time
# (the wall time of ceil(targets / cores) runs, not of every run in turn).
jobs=$(nproc)
declare -A pid_of
for t in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  echo "== fuzz_$t (${seconds} s)"
  fuzz_one "$t" &
  pid_of[$t]=$!
done
failed=()
for t in "${targets[@]}"; do
  if ! wait "${pid_of[$t]}"; then
    tail -40 build-fuzz/"$t".log
    echo "FAIL: fuzz_$t found a crash; the input is in build-fuzz/artifacts/"
    failed+=("$t")
    continue
  fi
  echo -n "fuzz_$t: "
  grep -E '^stat::(number_of_executed_units|new_units_added)|Done [0-9]+ runs' build-fuzz/"$t".log | tr '\n' ' '
  echo "corpus $(find build-fuzz/corpus/"$t" -type f | wc -l) inputs"
done
if ((${#failed[@]})); then exit 1; fi
echo "PASS: ${#targets[@]} fuzz targets, ${seconds} s each, no crash"
