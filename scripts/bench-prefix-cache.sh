#!/usr/bin/env bash
# Prefix-caching benchmark on the shipped model, side by side in one run:
# mod-server with prefix_caching true and false, alternated ROUNDS times, each
# under mod-client bench (CONCURRENCY calls in flight, REQUESTS requests) whose
# prompts all start with the same SHARED bytes (a system prompt) and go on
# with PROMPT bytes of their own, OUTPUT tokens each. Prints, per setting, the
# medians of output tokens/s, request throughput and time to first token (p50,
# p99), and the prefix cache's hit rate from the server's own metrics
# (modserve_prefix_cache_hits_total / _queries_total). N > 1 asks for N
# completions per request (GenerateRequest.n), whose later completions reuse
# the first one's prompt when caching is on (SHARED=0 and REQUESTS=10 give
# ten distinct prompts, so that is the only reuse).
# Usage: scripts/bench-prefix-cache.sh [extra mod-server flags]
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-160}
PROMPT=${PROMPT:-16}
OUTPUT=${OUTPUT:-32}
REQUESTS=${REQUESTS:-64}
CONCURRENCY=${CONCURRENCY:-8}
ROUNDS=${ROUNDS:-3}
N=${N:-1}
scripts/build.sh >/dev/null
# shellcheck source=scripts/serving-lib.sh
source scripts/serving-lib.sh

# $1: true|false, then extra server flags. Prints the bench's JSON on one line, then the hit rate.
serve() {
  local caching=$1
  shift
  start_server --prefix-caching "$caching" "$@"
  local hits queries
  build/bin/mod-client --server "127.0.0.1:$grpc_port" bench --concurrency "$CONCURRENCY" --requests "$REQUESTS" \
    --shared-prefix-bytes "$SHARED" --prompt-bytes "$PROMPT" --max-tokens "$OUTPUT" --n "$N" --ignore-eos --json | tr -d ' \n'
  echo
  hits=$(metric "$metrics_port" modserve_prefix_cache_hits_total)
  queries=$(metric "$metrics_port" modserve_prefix_cache_queries_total)
  awk -v h="$hits" -v q="$queries" 'BEGIN {if (q > 0) printf "%.3f\n", h / q; else print "n/a"}'
  stop_server
}
field() { grep -o "\"$1\":[0-9.e+-]*" | head -1 | cut -d: -f2; }
ttft() { grep -o '"ttft_seconds":{[^}]*}' | grep -o "\"$1\":[0-9.e+-]*" | cut -d: -f2; }

declare -A tps rps p50 p99 hit
for ((r = 0; r < ROUNDS; r++)); do
  for caching in true false; do
    out=$(serve "$caching" "$@")
    flat=$(head -1 <<<"$out")
    tps[$caching]+="$(field output_tokens_per_second <<<"$flat" | xargs printf '%.0f') "
    rps[$caching]+="$(field request_throughput <<<"$flat") "
    p50[$caching]+="$(ttft p50 <<<"$flat") "
    p99[$caching]+="$(ttft p99 <<<"$flat") "
    hit[$caching]+="$(tail -1 <<<"$out") "
    if ! grep -q "\"errors\":{}" <<<"$flat"; then echo "bench-prefix-cache.sh: calls failed: $flat" >&2; exit 1; fi
  done
done
echo "shipped model, concurrency $CONCURRENCY, $REQUESTS requests of n = $N: $SHARED shared prompt bytes + $PROMPT of their own, $OUTPUT output tokens; medians of $ROUNDS alternated rounds"
for caching in true false; do
  m() { tr ' ' '\n' <<<"$1" | grep . | median; }
  awk -v c="$caching" -v t="$(m "${tps[$caching]}")" -v r="$(m "${rps[$caching]}")" -v a="$(m "${p50[$caching]}")" \
      -v b="$(m "${p99[$caching]}")" -v h="${hit[$caching]}" -v runs="${tps[$caching]}" 'BEGIN {
    printf "prefix_caching %-5s: %7.1f output tok/s (runs: %s), %5.2f requests/s, TTFT p50 %6.1f ms, p99 %6.1f ms, hit rate (runs): %s\n", c, t, runs, r, a * 1e3, b * 1e3, h
  }'
done
