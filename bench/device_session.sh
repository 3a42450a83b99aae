#!/usr/bin/env bash
# One session on a GPU machine, from binaries built elsewhere and copied to BIN_DIR
# (relayllm_gpu_tests, attention_bench, decode_bench, tokenizer folder tok-llama2):
# the GPU tests, the end-to-end decode number (CUDA graphs and eager, and the op
# profile of the decode step), and the
# attention benchmark with its peers. Full logs go to OUT_DIR; a short summary is
# printed last. STAGES picks a subset (default "tests decode attention"), so a
# session can be split over commands with a time limit. When the `flashinfer`
# module imports, its kernels are JIT-compiled during the tests (the attention
# stage then starts warm).
# Usage: [STAGES="tests decode"] bench/device_session.sh BIN_DIR OUT_DIR [--quick]
set -uo pipefail
bin=$1 out=$2 quick=${3:-}
stages=${STAGES:-tests decode attention}
mkdir -p "$out"
cd "$(dirname "$0")/.."
if [[ -z "${RELAYLLM_CUBLASLT:-}" ]]; then
  RELAYLLM_CUBLASLT=$(find /opt /usr/local -name 'libcublasLt.so.1[0-9]*' 2>/dev/null | head -1)
  export RELAYLLM_CUBLASLT
fi
echo "cublasLt: $RELAYLLM_CUBLASLT"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem --format=csv | tee "$out/device.txt"
has() { [[ " $stages " == *" $1 "* ]]; }

warm_pid=
if has tests && python3 -c "import flashinfer" 2>/dev/null; then
  PYTHONUNBUFFERED=1 python3 bench/flashinfer_peers.py > "$out/flashinfer_warmup.log" 2>&1 &
  warm_pid=$!
fi
if has tests; then
  "$bin/relayllm_gpu_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} > "$out/gpu_tests.log" 2>&1
  echo "== gpu tests (rc $?)"
  grep -E '^\[(gpu-|  FAILED|  PASSED)|^\[==========\]|Failure|error' "$out/gpu_tests.log" | head -80
fi
if [[ -n "$warm_pid" ]]; then
  wait "$warm_pid"
  echo "== flashinfer warm-up (rc $?)"
  tail -3 "$out/flashinfer_warmup.log"
fi
if has decode; then
  "$bin/decode_bench" bench/configs/llama2-7b "$bin/tok-llama2" 128 32 > "$out/decode.log" 2>&1
  echo "== decode (rc $?)"
  grep -E '^\||decode steps, op by op' "$out/decode.log"
  tail -1 "$out/decode.log"
fi
if has attention; then
  bench/attention_bench.sh "$bin/attention_bench" "$out" $quick > "$out/attention.log" 2>&1
  echo "== attention bench (rc $?)"
  grep -E '^\|' "$out/attention_results.md" 2>/dev/null | cut -d'|' -f1-10 || tail -20 "$out/attention.log"
fi
if [[ -n "${SWEEP:-}" ]]; then
  bench/attention_sweep.sh "$bin/attention_bench" "$out" > "$out/sweep.log" 2>&1
  echo "== sweep"
  cat "$out/sweep.log"
fi
