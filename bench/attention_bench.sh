#!/usr/bin/env bash
# The decode attention benchmark in one command, on a machine with a CUDA GPU and
# PyTorch: our kernels (attention_bench), then the PyTorch peers, then one table.
# Usage: bench/attention_bench.sh ATTENTION_BENCH_BINARY OUT_DIR [--quick]
set -euo pipefail
bin=$1 out=$2 quick=${3:-}
mkdir -p "$out"
"$bin" $quick > "$out/attention_ours.jsonl"
python3 "$(dirname "$0")/attention_peers.py" --ours "$out/attention_ours.jsonl" \
  --out "$out/attention_results.md" --command "bench/attention_bench.sh $bin OUT $quick" $quick
