#!/usr/bin/env bash
# Sets up, builds and runs every test: installs the Debian packages, fetches
# the Brown validation split (for the shipped model's quality targets),
# builds, runs ctest, then the unit and end-to-end tests again under ASan +
# UBSan and the scheduler's under TSan, then each fuzz target for 30 s.
# Each stage's time is printed as it ends, and all of them at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
times=()
stage() {  # stage NAME COMMAND...: runs it, notes its seconds
  local name=$1 start=$SECONDS
  shift
  "$@"
  times+=("$name $((SECONDS - start)) s")
  echo "== stage $name: $((SECONDS - start)) s"
}
stage install scripts/install-deps.sh
stage corpus scripts/fetch-corpus.sh data/brown
stage build scripts/build.sh
stage ctest ctest --test-dir build --output-on-failure
stage asan scripts/test-sanitizers.sh asan
stage tsan scripts/test-sanitizers.sh tsan
stage fuzz scripts/fuzz.sh 30
printf '== stages:'; printf ' %s;' "${times[@]}"; echo
