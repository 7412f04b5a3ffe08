#!/usr/bin/env bash
# Installs the Debian 12 packages modserve needs to build, test and run.
# Idempotent: a fast no-op when every package is already installed.
# Usage: scripts/install-deps.sh [--build | --runtime]
#   (default: build and test; --build: only what compiling needs (the image's
#   build stage); --runtime: only what mod-server needs to run (the image))
set -euo pipefail

build_pkgs=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libtorch-dev libopenblas0-openmp
  prometheus-cpp-dev libyaml-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
)
test_pkgs=(python3-grpcio python3-protobuf prometheus openssl)
runtime_pkgs=(
  ca-certificates libtorch1.13 libopenblas0-openmp libgrpc++1.51 libgrpc29 libprotobuf32
  libprometheus-cpp-core1.0 libyaml-cpp0.7
)

mode=${1:-all}
case "$mode" in
  all) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  --build) pkgs=("${build_pkgs[@]}") ;;
  --runtime) pkgs=("${runtime_pkgs[@]}") ;;
  *) echo "install-deps: unknown option $mode (--build or --runtime)" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# kubectl renders the Kubernetes overlays (kubectl kustomize, offline); any
# install will do, Debian's kubernetes-client when there is none.
if [[ "$mode" == all ]] && ! command -v kubectl >/dev/null 2>&1; then
  missing+=(kubernetes-client)
fi

# Node.js and npm fetch the training corpus and run the Node client example; any
# install of them will do (Debian's npm conflicts with NodeSource's nodejs).
if [[ "$mode" == all ]] && ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
