#!/usr/bin/env bash
# A/B of attention kernel builds on one GPU, in one command: ROUNDS rounds, each
# running every variant's attention_bench once, the order rotated per round (so no
# variant always runs first or warm); then a table of each configuration's best time
# per variant relative to the first, and the geometric means. Compare variants only
# within one such run: clocks and placement move between machines and sessions.
# Usage: bench/attention_ab.sh OUT_DIR ROUNDS NAME=BIN_DIR ... [-- attention_bench flags]
# (BIN_DIR holds that variant's attention_bench)
set -euo pipefail
out=$1 rounds=$2
shift 2
names=() dirs=()
while [[ $# -gt 0 && $1 != -- ]]; do
  [[ $1 == *=* ]] || { echo "attention_ab: '$1' is not NAME=BIN_DIR" >&2; exit 2; }
  names+=("${1%%=*}") dirs+=("${1#*=}")
  shift
done
[[ ${1:-} == -- ]] && shift
[[ ${#names[@]} -ge 2 ]] || { echo "attention_ab: give at least two variants" >&2; exit 2; }
for d in "${dirs[@]}"; do
  [[ -x $d/attention_bench ]] || { echo "attention_ab: no attention_bench in $d" >&2; exit 2; }
done
mkdir -p "$out"
t0=$(date +%s)
n=${#names[@]}
for ((i = 0; i < rounds; i++)); do
  for ((j = 0; j < n; j++)); do
    v=$(((i + j) % n))
    rc=0
    "${dirs[$v]}/attention_bench" "$@" > "$out/${names[$v]}_$i.jsonl" 2> "$out/${names[$v]}_$i.err" || rc=$?
    echo "${names[$v]} round $i rc $rc ($(($(date +%s) - t0)) s)"
  done
done
python3 "$(dirname "$0")/attention_ab.py" "$out" "${names[@]}" | tee "$out/ab_table.md"
