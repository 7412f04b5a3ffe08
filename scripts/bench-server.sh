#!/usr/bin/env bash
# Serving benchmark, measured side by side in one run on the shipped model:
#   - mod-bench: the engine's batch-32 decode tokens/s and step time
#     (prompt of PROMPT+1 tokens, OUTPUT decode steps: the same contexts the
#     server sees), with all hardware threads and with the server's engine
#     thread counts (kernels on every core, LibTorch ops leaving one to gRPC);
#   - mod-server + mod-client bench at concurrency 32 (prompts of PROMPT
#     bytes, OUTPUT tokens each, REQUESTS requests);
# alternated ROUNDS times (engine, server, engine, ..., engine); the figures
# are medians, since this shared machine drifts by tens of percent.
# Prints both, and the ratios the server issue sets targets for:
#   output tokens/s / engine decode tokens/s (target >= 0.9) and
#   p99 inter-token latency / engine step time (target <= 2),
# and, for context, the p99 inter-token latency / the engine's own p99 step.
# Usage: scripts/bench-server.sh [extra mod-server flags, e.g. --kv-dtype bfloat16]
# (--dtype, --kv-dtype, --threads, --torch-threads and --block-size reach the
# engine runs too)
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${PROMPT:-64}
OUTPUT=${OUTPUT:-128}
REQUESTS=${REQUESTS:-128}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=32
scripts/build.sh >/dev/null
# shellcheck source=scripts/serving-lib.sh
source scripts/serving-lib.sh

# Prints the engine's decode tokens/s and its p99 step time in ms.
engine() {
  local flat
  flat=$(build/bin/mod-bench --batches "$CONCURRENCY" --synthetic false --dense false --prompt $((PROMPT + 1)) --steps "$OUTPUT" \
    --block-size "$block_size" --json "$@" 2>/dev/null | tr -d ' \n')
  local tps p99
  tps=$(grep -o '"mod_tokens_per_s":[0-9.e+-]*' <<<"$flat" | cut -d: -f2 || true)
  p99=$(grep -o '"mod_step_p99_ms":[0-9.e+-]*' <<<"$flat" | cut -d: -f2 || true)
  if [[ -z "$tps" || -z "$p99" ]]; then
    echo "bench-server.sh: mod-bench $* gave no decode figures" >&2
    return 1
  fi
  echo "$tps $p99"
}
dtype=float32  # the engine runs with the server's --dtype and --kv-dtype, if given
kv_dtype=auto
threads=$(nproc)                                      # the server's default kernel threads
torch_threads=$(($(nproc) > 1 ? $(nproc) - 1 : 1))  # and LibTorch threads
block_size=16                                         # the server's default KV block size
args=("$@")
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
  if [[ "${args[i]}" == "--dtype" ]]; then dtype=${args[i + 1]}; fi
  if [[ "${args[i]}" == "--kv-dtype" ]]; then kv_dtype=${args[i + 1]}; fi
  if [[ "${args[i]}" == "--threads" ]]; then threads=${args[i + 1]}; fi
  if [[ "${args[i]}" == "--torch-threads" ]]; then torch_threads=${args[i + 1]}; fi
  if [[ "${args[i]}" == "--block-size" ]]; then block_size=${args[i + 1]}; fi
done

serve() {
  start_server "$@"
  build/bin/mod-client --server "127.0.0.1:$grpc_port" bench --concurrency "$CONCURRENCY" --requests "$REQUESTS" \
    --prompt-bytes "$PROMPT" --max-tokens "$OUTPUT" --json | tr -d ' \n'
  stop_server
}

engines=() same=() outs=() itls=() ttfts=() errors="" step_p99s=()
run_engines() {
  local e s
  e=$(engine --dtype "$dtype" --kv-dtype "$kv_dtype")
  s=$(engine --dtype "$dtype" --kv-dtype "$kv_dtype" --threads "$threads" --torch-threads "$torch_threads")
  engines+=("${e% *}") step_p99s+=("${e#* }") same+=("${s% *}")
}
run_engines
for ((r = 0; r < ROUNDS; r++)); do
  flat=$(serve "$@")
  outs+=("$(grep -o '"output_tokens_per_second":[0-9.e+-]*' <<<"$flat" | cut -d: -f2)")
  itls+=("$(grep -o '"itl_seconds":{[^}]*}' <<<"$flat" | grep -o '"p99":[0-9.e+-]*' | cut -d: -f2)")
  ttfts+=("$(grep -o '"ttft_seconds":{[^}]*}' <<<"$flat" | grep -o '"p50":[0-9.e+-]*' | cut -d: -f2)")
  errors+=" $(grep -o '"errors":{[^}]*}' <<<"$flat" | cut -d: -f2-)"
  run_engines
done
e_all=$(printf '%.0f ' "${engines[@]}")
o_all=$(printf '%.0f ' "${outs[@]}")
e_med=$(printf '%s\n' "${engines[@]}" | median)
s_med=$(printf '%s\n' "${same[@]}" | median)
out_tps=$(printf '%s\n' "${outs[@]}" | median)
itl_p99=$(printf '%s\n' "${itls[@]}" | median)
ttft_p50=$(printf '%s\n' "${ttfts[@]}" | median)
step_p99=$(printf '%s\n' "${step_p99s[@]}" | median)
awk -v e="$e_med" -v se="$s_med" -v th="$threads" -v tt="$torch_threads" -v kv="$kv_dtype" -v eall="$e_all" -v oall="$o_all" -v out="$out_tps" -v itl="$itl_p99" -v ttft="$ttft_p50" -v c="$CONCURRENCY" \
    -v p="$PROMPT" -v o="$OUTPUT" -v n="$REQUESTS" -v dt="$dtype" -v err="$errors" -v sp99="$step_p99" 'BEGIN {
  step = c / e;
  printf "shipped model, %s (KV cache %s), concurrency %d, %d requests, prompt %d bytes, %d output tokens\n", dt, kv, c, n, p, o;
  printf "engine (mod-bench) batch-%d decode: median %.1f tok/s (runs: %s), step %.2f ms (p99 of its steps %.2f ms)\n", c, e, eall, step * 1e3, sp99;
  printf "server (mod-client bench): median %.1f output tok/s (runs: %s), p99 inter-token latency %.2f ms, p50 TTFT %.1f ms, errors:%s\n", out, oall, itl * 1e3, ttft * 1e3, err;
  printf "engine at the server thread counts (%d kernel, %d torch): median %.1f tok/s, step %.2f ms\n", th, tt, se, c / se * 1e3;
  printf "ratio output tok/s / engine decode tok/s: %.2f (target >= 0.9)\n", out / e;
  printf "ratio output tok/s / engine decode tok/s at the same engine threads: %.2f\n", out / se;
  printf "ratio p99 inter-token latency / engine step: %.2f (target <= 2)\n", itl / step;
  printf "ratio p99 inter-token latency / engine step at the same engine threads: %.2f\n", itl / (c / se);
  printf "ratio p99 inter-token latency / the engine'"'"'s own p99 step: %.2f\n", itl * 1e3 / sp99;
}'
