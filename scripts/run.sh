#!/usr/bin/env bash
# Sets up, builds and runs mod-server on the shipped default model
# (gRPC on 127.0.0.1:50051, metrics on 127.0.0.1:9464). Arguments go to
# mod-server (e.g. --config deploy/mod-server.yaml, --listen 0.0.0.0:50051).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
exec build/bin/mod-server --config deploy/mod-server.yaml "$@"
