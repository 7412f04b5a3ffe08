#!/usr/bin/env bash
# Monitoring checks: promtool validates the scrape config and the rules and
# runs the rule unit tests; then a real mod-server serves a few requests, a
# real Prometheus (offline, loopback) scrapes it and evaluates the recording
# rules, and the skip rate per routed layer is read back through its HTTP
# API; finally the dashboard and rules are checked to refer only to metrics
# the server exports, and every dashboard query and recording rule must
# return data from that Prometheus.
# Usage: tests/monitoring_test.sh BIN_DIR SOURCE_DIR
set -euo pipefail
bin=$1
src=$2
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

promtool check config "$src/deploy/prometheus/prometheus.yml"
promtool check rules "$src/deploy/prometheus/modserve-rules.yml"
(cd "$src/tests/prometheus" && promtool test rules modserve-rules-test.yml)

"$bin/mod-server" --model "$src/models/mod-small" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 1 300); do grep -q 'metrics on .*(port [0-9]*)' "$work/server.log" && break; sleep 0.1; done
grpc_port=$(grep -o '(port [0-9]*)' "$work/server.log" | sed -n 1p | tr -dc 0-9)
metrics_port=$(grep -o '(port [0-9]*)' "$work/server.log" | sed -n 2p | tr -dc 0-9)
[[ -n "$metrics_port" ]] || { cat "$work/server.log"; exit 1; }

fetch() { /usr/bin/python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"; }

# Prometheus scraping the server every second, rules evaluated every second.
prom_port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e "s/127.0.0.1:9464/127.0.0.1:$metrics_port/" -e 's/15s/1s/g' "$src/deploy/prometheus/prometheus.yml" >"$work/prometheus.yml"
cp "$src/deploy/prometheus/modserve-rules.yml" "$work/"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)

# Load only once Prometheus has a first sample, so the rates cover it.
for _ in $(seq 1 60); do
  fetch "http://127.0.0.1:$prom_port/api/v1/query?query=up" 2>/dev/null | grep -q '"value":\[[0-9.]*,"1"\]' && break
  sleep 0.5
done
# Load from the load generator (streaming requests, 8 at a time).
"$bin/mod-client" --server "127.0.0.1:$grpc_port" bench --concurrency 8 --requests 48 --shared-prefix-bytes 48 --prompt-bytes 32 --max-tokens 32 \
  | sed -n '1,3p'
# Guided requests (the guide cache panel): one choice list three times, one compile.
for _ in 1 2 3; do
  "$bin/mod-client" --server "127.0.0.1:$grpc_port" generate --prompt "The verdict: " --max-tokens 16 \
    --guided-choice 'guilty|not guilty' >/dev/null
done
fetch "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.txt"

# Wait until Prometheus has scraped twice after the load and evaluated the rules.
query="http://127.0.0.1:$prom_port/api/v1/query?query=modserve:layer_skip_rate:ratio_rate5m"
result=""
for _ in $(seq 1 60); do
  result=$(fetch "$query" 2>/dev/null || true)
  if grep -q '"layer":"5"' <<<"$result"; then break; fi
  for i in 1 2; do "$bin/mod-client" --server "127.0.0.1:$grpc_port" generate --prompt "more $i" --max-tokens 8 >/dev/null 2>&1; done
  sleep 1
done
echo "Prometheus: $result"
/usr/bin/python3 - "$result" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
rates = {s["metric"]["layer"]: float(s["value"][1]) for s in r["data"]["result"]}
assert set(rates) == {"1", "3", "5"}, f"skip rate series: {rates}"
for layer, v in rates.items():
    assert 0.5 < v <= 1.0, f"layer {layer}: skip rate {v} (capacity 0.125: expect about 0.875)"
print("PASS: skip rate per routed layer through Prometheus:", rates)
PY

# Every recording rule and every dashboard query must return data.
sleep 3
/usr/bin/python3 "$src/tests/check_monitoring.py" "$work/metrics.txt" "$src/deploy/prometheus/modserve-rules.yml" \
  "$src/deploy/grafana/modserve-dashboard.json" "http://127.0.0.1:$prom_port"
echo "PASS: monitoring"
