#!/usr/bin/env bash
# Renders every kustomize overlay (deploy/k8s/overlays/*) with kubectl
# kustomize (offline) and validates the result with tests/k8s/validate.js
# (Kubernetes 1.27 schemas from npm's kubernetes-models 4.x, plus selector,
# port and grace-period checks) and tests/k8s/typegen.js + tsc (every object
# as a constant of its kubernetes-models interface: unknown fields fail).
# Usage: tests/k8s_test.sh SOURCE_DIR
set -euo pipefail
src=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$src/tests/k8s/package.json" "$src/tests/k8s/validate.js" "$src/tests/k8s/typegen.js" "$work/"
(cd "$work" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
for overlay in "$src"/deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" 2>/dev/null >"$work/$name.yaml"
  echo "== overlay $name: $(grep -c '^kind:' "$work/$name.yaml") objects"
  node "$work/validate.js" "$work/$name.yaml"
  node "$work/typegen.js" "$work/$name.yaml" "$work/$name.ts"
  (cd "$work" && npx --no-install tsc --noEmit --strict --moduleResolution node --target es2020 --skipLibCheck "$name.ts")
  echo "$name: no unknown fields (tsc)"
done
echo "PASS: kubernetes manifests"
