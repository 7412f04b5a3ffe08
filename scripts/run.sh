#!/usr/bin/env bash
# Sets up, builds and runs modserve on the shipped default model. Until the
# gRPC server lands this generates text from models/mod-small; arguments go to
# mod-generate (e.g. --prompt "The jury" --max-tokens 300).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
exec build/bin/mod-generate --model models/mod-small "$@"
