#!/usr/bin/env bash
# Type-checks the Grafana dashboard against Grafana's own schema: the JSON is
# wrapped as a typed `Dashboard` constant (npm @grafana/schema) and compiled
# by tsc --strict, so a wrong type or an unknown top-level field fails.
# Usage: tests/dashboard_typecheck.sh SOURCE_DIR
set -euo pipefail
src=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$src/tests/grafana/package.json" "$work/"
(cd "$work" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
{
  echo "import { Dashboard } from '@grafana/schema';"
  printf 'export const dashboard: Dashboard = '
  cat "$src/deploy/grafana/modserve-dashboard.json"
  echo ';'
} >"$work/dashboard.ts"
(cd "$work" && npx --no-install tsc --noEmit --strict --moduleResolution node --target es2020 --skipLibCheck dashboard.ts)
echo "PASS: dashboard type-checks against @grafana/schema"
