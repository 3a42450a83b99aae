#!/usr/bin/env bash
# The end-to-end session on a GPU machine (the paper's table, offline and served), from binaries built
# elsewhere and copied to BIN_DIR (relayllm, relayllm_gpu_tests, decode_bench; the Llama-2 tokenizer
# folder as BIN_DIR/tok-llama2). STAGES picks what runs, so a session can be split over commands with a
# time limit:
#   tests    the GPU tests (a sanity check of the binaries on this device)
#   decode   decode_bench on Llama-2-7B (dummy weights): the decode step with its op profile
#   offline  bench/paper_e2e.sh: no sharing / prefix caching / relay, system prompt 2048 tokens
#   sweep    relay (and prefix caching) with system prompts of 64, 512, 2048 and 8192 tokens
#   online   `relayllm serve` per mode under a Poisson rate sweep (bench/serve_bench.py), and the plot
#   hf       HF transformers generate on the same workload (the naive anchor), when torch is there
# Full logs go to OUT_DIR/work (packed into OUT_DIR/e2e_logs.tar.gz at the end); the tables are printed
# and kept as OUT_DIR/{offline,online}.jsonl and OUT_DIR/serve_latency.png.
# Usage: [STAGES="tests offline"] [REQUESTS=500] bench/device_e2e.sh BIN_DIR OUT_DIR
set -uo pipefail
bin=$(cd "$1" && pwd) out=$(mkdir -p "$2" && cd "$2" && pwd)
stages=${STAGES:-tests decode offline sweep online hf}
cd "$(dirname "$0")/.."
work=$out/work
mkdir -p "$work"
tok=$bin/tok-llama2
has() { [[ " $stages " == *" $1 "* ]]; }
if [[ -z "${RELAYLLM_CUBLASLT:-}" ]]; then
  RELAYLLM_CUBLASLT=$(find /opt /usr/local /usr/lib -name 'libcublasLt.so.1[0-9]*' 2>/dev/null | head -1)
  export RELAYLLM_CUBLASLT
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$work/device.txt"
# MODEL / MODEL_16K / DEVICE may point elsewhere (a tiny config on the CPU checks the script itself).
gpu=(--device "${DEVICE:-cuda}" --load-format dummy)
llama2=${MODEL:-bench/configs/llama2-7b}
llama2_16k=${MODEL_16K:-bench/configs/llama2-7b-16k}

if has tests; then
  timeout 300 "$bin/relayllm_gpu_tests" >"$work/gpu_tests.log" 2>&1
  echo "== gpu tests (rc $?)"
  grep -E '^\[  FAILED|^\[  PASSED|^\[==========\]' "$work/gpu_tests.log" | tail -12
fi
if has decode; then
  timeout 200 "$bin/decode_bench" "$llama2" "$tok" 128 32 >"$work/decode.log" 2>&1
  echo "== decode (rc $?)"
  grep -E '^\||decode steps, op by op' "$work/decode.log" | head -40
  tail -2 "$work/decode.log"
fi
if has offline; then
  echo "== offline, Llama-2-7B shape, system prompt 2048 tokens"
  REQUESTS=${REQUESTS:-500} PREFIXES=2048 GENERATE_TIMEOUT=${GENERATE_TIMEOUT:-240} bench/paper_e2e.sh \
    "$bin/relayllm" "$tok" "$work" --model "$llama2" "${gpu[@]}"
  cp "$work/offline.jsonl" "$out/offline.jsonl" 2>/dev/null
fi
if has sweep; then
  echo "== sweep of the system prompt's length (16k-context config of the same shape)"
  REQUESTS=${REQUESTS:-500} PREFIXES="${SWEEP_PREFIXES:-64 512 2048 8192}" \
    MODES="${SWEEP_MODES:-relay prefix-caching}" GENERATE_TIMEOUT=${GENERATE_TIMEOUT:-240} \
    bench/paper_e2e.sh "$bin/relayllm" "$tok" "$work/sweep" --model "$llama2_16k" "${gpu[@]}"
  cp "$work/sweep/offline.jsonl" "$out/offline_sweep.jsonl" 2>/dev/null
fi
if has online; then
  echo "== online: Poisson rate sweep per mode"
  python3 bench/sys_prompt_text.py "$bin/relayllm" "$tok" 2048 "$work/sys.txt" 0 >"$work/sys_ids.json"
  port=8137
  for mode in ${ONLINE_MODES:-relay prefix-caching none}; do
    flags=(--no-enable-prefix-caching)
    rates=${RATES:-2,4,8,16,24}
    case $mode in
      prefix-caching) flags=(--enable-prefix-caching) ;;
      relay) flags+=(--enable-relay-attention --sys-prompt-file "$work/sys.txt") ;;
      none) rates=${RATES_NONE:-1,2,4,8} ;;
    esac
    "$bin/relayllm" serve --model "$llama2" --tokenizer "$tok" "${gpu[@]}" --port "$port" \
      --max-queue 100000 "${flags[@]}" >"$work/serve_$mode.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
      python3 -c "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:$port/health', timeout=2).status != 200)" \
        2>/dev/null && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    # Warm-up: graphs are captured and kernels loaded on first use, outside the measurement.
    timeout 120 python3 bench/serve_bench.py --base-url "http://127.0.0.1:$port" \
      --sys-ids-file "$work/sys_ids.json" --request-rates inf --num-prompts 32 --seed 99 --label warmup >"$work/warmup_$mode.log" 2>&1
    IFS=, read -ra rate_list <<<"$rates"
    for rate in "${rate_list[@]}"; do
      # About RATE_WINDOW_S (15) seconds of arrivals per rate, at least 30 requests.
      n=$(python3 -c "print(max(30, int(${RATE_WINDOW_S:-15} * $rate)))")
      timeout 150 python3 bench/serve_bench.py --base-url "http://127.0.0.1:$port" \
        --sys-ids-file "$work/sys_ids.json" --request-rates "$rate" --num-prompts "$n" --label "$mode" --result-json "$out/online.jsonl" \
        2>>"$work/serve_bench_$mode.err" | tail -n +3 | tee -a "$work/online_table.md"
    done
    kill -INT "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  python3 bench/plot_serve.py "$out/online.jsonl" "$out/serve_latency.png" \
    "relayllm serve, Llama-2-7B shape (dummy weights), system prompt 2048 tokens, ShareGPT-like turns" \
    || echo "plot failed"
fi
if has hf; then
  echo "== HF transformers generate (anchor)"
  PYTHONUNBUFFERED=1 timeout 300 python3 bench/hf_generate_anchor.py "$llama2" "$bin/relayllm" "$tok" \
    ${HF_REQUESTS:-32} >"$work/hf.log" 2>&1
  tail -3 "$work/hf.log"
fi
tar -czf "$out/e2e_logs.tar.gz" -C "$out" work && rm -rf "$work"
echo "== tables"
[[ -f "$out/online.jsonl" ]] && cat "$out/online.jsonl" | python3 -c "
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    print(f\"{r['label']:>15} rate {r['request_rate']:>5} req/s {r['requests_per_s']:6.2f} ttft p50/p99 {r['ttft_p50_ms']:7.0f}/{r['ttft_p99_ms']:7.0f} tpot p50/p99 {r['tpot_p50_ms']:6.1f}/{r['tpot_p99_ms']:6.1f} e2e p50 {r['e2e_p50_ms']:7.0f}\")
"
for f in "$out/offline.jsonl" "$out/offline_sweep.jsonl"; do
  [[ -f $f ]] && python3 -c "
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(f\"prefix {r['prefix']:>5} {r['mode']:>15} req/s {r['requests_per_s']:6.2f} out tok/s {r['output_tokens_per_s']:7.0f} preempt {r['preemptions']:4d} same {r['same_tokens']}/{r['requests']}\")
" "$f"
done
true
