#!/usr/bin/env bash
# Priority-scheduling benchmark on the shipped model: what a request of
# higher priority gains while a backlog of background requests fills the
# server. mod-server runs with scheduling_policy: priority and max_running
# RUNNING; a background mod-client bench keeps BACKGROUND calls in flight
# (priority 10, BG_OUTPUT tokens each), so about BACKGROUND - RUNNING wait in
# the queue. Meanwhile a probe sends PROBES requests one at a time (PROBE_OUTPUT
# tokens each) at priority 0 (ahead of the backlog) or 10 (the backlog's own),
# alternated ROUNDS times, each on a fresh server. Prints, per probe priority,
# the medians over the rounds of the probe's time to first token (p50, p99)
# and end-to-end latency (p50), and the priority preemptions the server
# counted (modserve_priority_preemptions_total).
# Usage: scripts/bench-priority.sh [extra mod-server flags]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNNING=${RUNNING:-32}
BACKGROUND=${BACKGROUND:-64}
BG_OUTPUT=${BG_OUTPUT:-128}
PROBES=${PROBES:-16}
PROBE_OUTPUT=${PROBE_OUTPUT:-32}
ROUNDS=${ROUNDS:-2}
scripts/build.sh >/dev/null
# shellcheck source=scripts/serving-lib.sh
source scripts/serving-lib.sh

# $1: the probe's priority, then extra server flags. Prints the probe's bench JSON on one line, then the preemptions.
round() {
  local priority=$1
  shift
  start_server --scheduling-policy priority --max-running "$RUNNING" "$@"
  build/bin/mod-client --server "127.0.0.1:$grpc_port" bench --concurrency "$BACKGROUND" --requests 100000 \
    --max-tokens "$BG_OUTPUT" --ignore-eos --priority 10 --json >/dev/null 2>&1 &
  local background=$!
  # Until the queue holds the backlog.
  for _ in $(seq 1 200); do
    [[ "$(metric "$metrics_port" modserve_queue_requests)" -ge $((BACKGROUND - RUNNING - 2)) ]] 2>/dev/null && break
    sleep 0.05
  done
  build/bin/mod-client --server "127.0.0.1:$grpc_port" bench --concurrency 1 --requests "$PROBES" \
    --max-tokens "$PROBE_OUTPUT" --ignore-eos --priority "$priority" --json | tr -d ' \n'
  echo
  metric "$metrics_port" modserve_priority_preemptions_total
  kill "$background" 2>/dev/null || true
  wait "$background" 2>/dev/null || true
  stop_server
}
# A latency statistic of the bench JSON, in ms.
stat_of() { grep -o "\"$1\":{[^}]*}" | grep -o "\"$2\":[0-9.e+-]*" | cut -d: -f2 | awk '{printf "%.1f", $1 * 1e3}'; }

declare -A t50 t99 e50 pre
for ((r = 0; r < ROUNDS; r++)); do
  for priority in 0 10; do
    out=$(round "$priority" "$@")
    flat=$(head -1 <<<"$out")
    if ! grep -q "\"errors\":{}" <<<"$flat"; then echo "bench-priority.sh: probe calls failed: $flat" >&2; exit 1; fi
    t50[$priority]+="$(stat_of ttft_seconds p50 <<<"$flat") "
    t99[$priority]+="$(stat_of ttft_seconds p99 <<<"$flat") "
    e50[$priority]+="$(stat_of e2e_seconds p50 <<<"$flat") "
    pre[$priority]+="$(tail -1 <<<"$out" | xargs printf '%.0f') "
  done
done
echo "shipped model, max_running $RUNNING, $BACKGROUND background calls in flight (priority 10, $BG_OUTPUT tokens);" \
  "probe: $PROBES requests one at a time, $PROBE_OUTPUT tokens; medians of $ROUNDS alternated rounds"
for priority in 0 10; do
  m() { tr ' ' '\n' <<<"$1" | grep . | median; }
  awk -v p="$priority" -v a="$(m "${t50[$priority]}")" -v b="$(m "${t99[$priority]}")" -v e="$(m "${e50[$priority]}")" \
      -v runs="${t50[$priority]}" -v n="${pre[$priority]}" 'BEGIN {
    printf "probe priority %2d: TTFT p50 %7.1f ms (runs: %s), p99 %7.1f ms, latency p50 %7.1f ms, priority preemptions (runs): %s\n",
      p, a, runs, b, e, n
  }'
done
