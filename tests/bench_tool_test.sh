#!/usr/bin/env bash
# mod-bench, briefly: the JSON the issue names (every field, MoD and its dense
# twin timed side by side), the MoD-only form the serving benchmark reads
# (--dense false), and the row scan. Checks the shape and the invariants of
# the figures (positive rates, ratios that are the quotients of their parts,
# routed layers computing less than all tokens), not their speed.
# Usage: tests/bench_tool_test.sh BIN_DIR SOURCE_DIR
set -euo pipefail
bin=$1
cd "$2"
common=(--batches "1,4" --prompt 6 --steps 3 --synthetic-d-model 64 --synthetic-layers 4 --synthetic-heads 4 --threads 1)
"$bin/mod-bench" "${common[@]}" --json >"${TMPDIR:-/tmp}/bench_both.$$.json"
"$bin/mod-bench" "${common[@]}" --json --dense false >"${TMPDIR:-/tmp}/bench_mod.$$.json"
trap 'rm -f "${TMPDIR:-/tmp}"/bench_*.$$.json' EXIT
/usr/bin/python3 - "${TMPDIR:-/tmp}/bench_both.$$.json" "${TMPDIR:-/tmp}/bench_mod.$$.json" <<'PY'
import json, sys
both = json.load(open(sys.argv[1]))["results"]
mod = json.load(open(sys.argv[2]))["results"]
want = {"model", "batch", "mod_tokens_per_s", "dense_tokens_per_s", "speedup_ratio", "compute_fraction",
        "kv_bytes_per_token_mod", "kv_bytes_per_token_dense", "kv_bytes_ratio", "achieved_gflops", "matmul_peak_gflops"}
assert [(r["model"], r["batch"]) for r in both] == [(m, b) for m in ("shipped", "synthetic") for b in (1, 4)], both
for r in both:
    assert want <= r.keys(), want - r.keys()
    assert r["mod_tokens_per_s"] > 0 and r["dense_tokens_per_s"] > 0, r
    assert abs(r["speedup_ratio"] - r["mod_tokens_per_s"] / r["dense_tokens_per_s"]) < 1e-9 * r["speedup_ratio"], r
    assert abs(r["kv_bytes_ratio"] - r["kv_bytes_per_token_mod"] / r["kv_bytes_per_token_dense"]) < 1e-9, r
    assert 0 <= r["compute_fraction"] < 1, r
    assert r["kv_bytes_per_token_mod"] < r["kv_bytes_per_token_dense"], r
    assert 0 < r["achieved_gflops"] and 0 < r["matmul_peak_gflops"], r
assert [(r["model"], r["batch"]) for r in mod] == [(r["model"], r["batch"]) for r in both], mod
for r in mod:
    assert r["mod_tokens_per_s"] > 0 and "dense_tokens_per_s" not in r and "speedup_ratio" not in r, r
    # Step times: the p99 of 3 steps is the longest, so at least the mean step (batch / tok/s).
    mean_ms = 1e3 * r["batch"] / r["mod_tokens_per_s"]
    assert 0 < r["mod_step_p50_ms"] <= r["mod_step_p99_ms"], r
    assert r["mod_step_p99_ms"] >= mean_ms * (1 - 1e-9), r
print(f"mod-bench: {len(both)} side-by-side results and {len(mod)} MoD-only results check out")
PY
"$bin/mod-bench" --row-scan --synthetic-d-model 256 | grep -q 'f32 engine .*128 rows [0-9.]*'
echo "mod-bench --row-scan prints every row count"
