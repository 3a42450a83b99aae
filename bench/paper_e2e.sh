#!/usr/bin/env bash
# The RelayAttention paper's end-to-end comparison, offline: REQUESTS chat requests of a ShareGPT-like
# workload (bench/sharegpt_like.py says which lengths) under one system prompt of PREFIX tokens, run by
# `relayllm generate` with no sharing, with automatic prefix caching, and with relay attention. All
# requests are submitted at once (as vLLM's throughput benchmark does); the time is the engine's, from
# the first step to the last, without model loading. For each PREFIX in PREFIXES and each MODE in
# MODES it prints requests/s and output tokens/s, appends a JSON line to OUT_DIR/offline.jsonl, and
# counts the requests whose tokens equal the first mode's (16-bit near-ties may flip a greedy token).
#
# GENERATE_TIMEOUT (seconds) bounds each generate run.
# Usage: [REQUESTS=500] [PREFIXES="2048"] [MODES="none prefix-caching relay"] [SEED=0] \
#        bench/paper_e2e.sh RELAYLLM_BIN TOKENIZER_DIR OUT_DIR [generate flags: --model, --device, ...]
# Example (GPU): bench/paper_e2e.sh build/relayllm TOKDIR out --model bench/configs/llama2-7b \
#                  --load-format dummy --device cuda
set -euo pipefail
bin=$1 tok=$2 out=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
requests=${REQUESTS:-500} prefixes=${PREFIXES:-2048} modes=${MODES:-none prefix-caching relay}
seed=${SEED:-0}
mkdir -p "$out"
failed=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf '| prefix | mode | requests | seconds | requests/s | output tok/s | prompt tokens | preemptions | same tokens |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for prefix in $prefixes; do
  sys_ids=$(python3 "$here/sys_prompt_text.py" "$bin" "$tok" "$prefix" "$work/sys.txt" "$seed")
  python3 "$here/sharegpt_like.py" "$requests" "$seed" "$sys_ids" >"$work/prompts.jsonl" \
    2>"$work/workload.txt"
  first=
  for mode in $modes; do
    flags=(--no-enable-prefix-caching)
    case $mode in
      none) ;;
      prefix-caching) flags=(--enable-prefix-caching) ;;
      relay) flags+=(--enable-relay-attention --sys-prompt-file "$work/sys.txt") ;;
      *) echo "paper_e2e.sh: unknown mode '$mode' (none, prefix-caching, relay)" >&2; exit 2 ;;
    esac
    log="$out/offline_${prefix}_${mode}.log"
    ${GENERATE_TIMEOUT:+timeout "$GENERATE_TIMEOUT"} "$bin" generate --tokenizer "$tok" \
      --prompts-file "$work/prompts.jsonl" --seed "$seed" "${flags[@]}" "$@" \
      >"$work/$mode.jsonl" 2>"$log" || {
      echo "paper_e2e.sh: generate failed (or timed out) for prefix $prefix mode $mode; see $log" >&2
      tail -5 "$log" >&2
      failed=1
      continue
    }
    [ -n "$first" ] || first=$mode
    python3 - "$work" "$mode" "$first" "$prefix" "$log" "$out/offline.jsonl" <<'PY'
import json, re, sys
work, mode, first, prefix, log, sink = sys.argv[1:7]
line = [l for l in open(log) if "requests in" in l][-1]
n, secs, prompt, gen, pre = re.search(
    r"(\d+) requests in ([\d.]+) s: (\d+) prompt \+ (\d+) generated.*?(\d+) preemptions", line).groups()
n, secs, prompt, gen, pre = int(n), float(secs), int(prompt), int(gen), int(pre)
tokens = lambda m: [json.loads(l).get("token_ids") for l in open(f"{work}/{m}.jsonl")]
ours, ref = tokens(mode), tokens(first)
same = sum(a == b for a, b in zip(ours, ref))
workload = open(f"{work}/workload.txt").read().strip()
row = {"prefix": int(prefix), "mode": mode, "requests": n, "seconds": secs, "requests_per_s": n / secs,
       "output_tokens_per_s": gen / secs, "prompt_tokens": prompt, "generated_tokens": gen,
       "preemptions": pre, "same_tokens_as": first, "same_tokens": same, "workload": workload}
open(sink, "a").write(json.dumps(row) + "\n")
print(f"| {prefix} | {mode} | {n} | {secs:.2f} | {n / secs:.2f} | {gen / secs:.0f} | {prompt} | {pre} "
      f"| {same}/{len(ref)} |")
PY
  done
done
echo "workload: $(cat "$work/workload.txt")"
exit "$failed"
