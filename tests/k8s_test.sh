#!/usr/bin/env bash
# Renders every kustomize overlay (deploy/k8s/overlays/*) with kubectl
# kustomize (offline) and validates the result with tests/k8s/validate.js
# (Kubernetes 1.27 schemas from npm's kubernetes-models 4.x, plus selector,
# port and grace-period checks).
# Usage: tests/k8s_test.sh SOURCE_DIR
set -euo pipefail
src=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$src/tests/k8s/package.json" "$src/tests/k8s/validate.js" "$work/"
(cd "$work" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
for overlay in "$src"/deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" 2>/dev/null >"$work/$name.yaml"
  echo "== overlay $name: $(grep -c '^kind:' "$work/$name.yaml") objects"
  node "$work/validate.js" "$work/$name.yaml"
done
echo "PASS: kubernetes manifests"
