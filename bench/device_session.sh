#!/usr/bin/env bash
# One session on a GPU machine, from binaries built elsewhere and copied to BIN_DIR
# (relayllm_gpu_tests, attention_bench, decode_bench, tokenizer folder tok-llama2):
# the GPU tests, the end-to-end decode number (CUDA graphs and eager), and the
# attention benchmark with its peers. Full logs go to OUT_DIR; a short summary is printed last.
# Usage: bench/device_session.sh BIN_DIR OUT_DIR [--quick]
set -uo pipefail
bin=$1 out=$2 quick=${3:-}
mkdir -p "$out"
cd "$(dirname "$0")/.."
if [[ -z "${RELAYLLM_CUBLASLT:-}" ]]; then
  RELAYLLM_CUBLASLT=$(find /opt /usr/local -name 'libcublasLt.so.1[0-9]*' 2>/dev/null | head -1)
  export RELAYLLM_CUBLASLT
fi
echo "cublasLt: $RELAYLLM_CUBLASLT"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem --format=csv | tee "$out/device.txt"

"$bin/relayllm_gpu_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} > "$out/gpu_tests.log" 2>&1
tests_rc=$?
"$bin/decode_bench" bench/configs/llama2-7b "$bin/tok-llama2" 128 32 > "$out/decode.log" 2>&1
decode_rc=$?
bench/attention_bench.sh "$bin/attention_bench" "$out" $quick > "$out/attention.log" 2>&1
bench_rc=$?

if [[ -n "${SWEEP:-}" ]]; then
  bench/attention_sweep.sh "$bin/attention_bench" "$out" > "$out/sweep.log" 2>&1
fi

echo "== gpu tests (rc $tests_rc)"
grep -E '^\[(gpu-|  FAILED|  PASSED)|^\[==========\]|Failure|error' "$out/gpu_tests.log" | head -80
echo "== decode (rc $decode_rc)"
tail -3 "$out/decode.log"
echo "== attention bench (rc $bench_rc)"
grep -E '^\|' "$out/attention_results.md" 2>/dev/null | cut -d'|' -f1-10 || tail -20 "$out/attention.log"
[[ -f "$out/sweep.log" ]] && { echo "== sweep"; cat "$out/sweep.log"; }
