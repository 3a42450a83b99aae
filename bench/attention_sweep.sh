#!/usr/bin/env bash
# Tuning sweep of the attention work list (items per SM, shortest split) on a
# subset of bench/attention_bench's configurations.
# Usage: bench/attention_sweep.sh ATTENTION_BENCH_BINARY OUT_DIR [SETTING...]
# (each SETTING one quoted string of attention_bench flags)
set -euo pipefail
bin=$1 out=$2
shift 2
settings=("$@")
if [[ ${#settings[@]} -eq 0 ]]; then
  settings=("--items-per-sm 4 --min-split 128" "--items-per-sm 8 --min-split 64"
            "--items-per-sm 16 --min-split 32" "--items-per-sm 32 --min-split 16")
fi
mkdir -p "$out"
subset=(--batches 1,8,32,128 --prefixes 2048,8192 --owns 128)
for setting in "${settings[@]}"; do
  # shellcheck disable=SC2086
  "$bin" "${subset[@]}" $setting
done > "$out/sweep.jsonl"
python3 - "$out/sweep.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"ours"' in l]
key = lambda r: (r["items_per_sm"], r["min_split"])
keys = sorted({key(r) for r in rows})
print("shape B prefix own | " + " | ".join(f"i{k[0]}/s{k[1]} relay,paged us" for k in keys))
cfgs = sorted({(r["shape"], r["batch"], r["prefix"], r["own"]) for r in rows})
for c in cfgs:
    cells = []
    for k in keys:
        r = next(x for x in rows if (x["shape"], x["batch"], x["prefix"], x["own"]) == c
                 and key(x) == k)
        cells.append(f"{1e3 * r['relay_ms']:.0f},{1e3 * r['paged_ms']:.0f}")
    print(" ".join(map(str, c)) + " | " + " | ".join(cells))
PY
