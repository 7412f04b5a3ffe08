#!/usr/bin/env bash
# Sets up, builds and runs every test: installs the Debian packages, fetches
# the Brown validation split (for the shipped model's quality targets),
# builds, runs ctest, then the unit and end-to-end tests again under ASan +
# UBSan and the scheduler's under TSan, then each fuzz target for 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fetch-corpus.sh data/brown
scripts/build.sh
ctest --test-dir build --output-on-failure
scripts/test-sanitizers.sh
scripts/fuzz.sh 30
