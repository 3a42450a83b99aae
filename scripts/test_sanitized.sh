#!/usr/bin/env bash
# CI stage: the unit tests and the server tests on an AddressSanitizer + UBSan build, then a
# fixed-time run of every fuzz target from its committed seeds (tests/fuzz). One clang build
# directory (build-san, CPU only) holds the sanitized binaries and the fuzzers. Any
# sanitizer report fails the stage, including one from a server process that a Python test
# started and stopped.
#   RELAYLLM_FUZZ_SECONDS  seconds per fuzz target (default 20)
#   RELAYLLM_SAN_BUILD     build directory (default build-san)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${RELAYLLM_SAN_BUILD:-build-san}
fuzz_seconds=${RELAYLLM_FUZZ_SECONDS:-20}
jobs=$(nproc)

start=$(date +%s)
# -O1: the optimisation AddressSanitizer suggests, and the fastest to compile of those that
# keep the tests quick.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
  -DCMAKE_CXX_COMPILER=clang++ \
  -DRELAYLLM_ENABLE_CUDA=OFF -DRELAYLLM_SANITIZE=ON -DRELAYLLM_BUILD_FUZZERS=ON -DRELAYLLM_UNITY_BUILD=ON \
  -DRELAYLLM_FUZZ_SECONDS="$fuzz_seconds" >&2
# Only what the tests run: the CLI (server tests), the unit tests and the fuzzers.
cmake --build "$build" -j"$jobs" --target relayllm relayllm_unit_tests \
  fuzz_http_request fuzz_chat_template fuzz_model_json fuzz_gguf fuzz_safetensors fuzz_constraint >&2
echo "sanitizer stage: build took $(( $(date +%s) - start )) s" >&2

logs=$PWD/$build/sanitizer-logs
rm -rf "$logs" && mkdir -p "$logs"
export ASAN_OPTIONS="log_path=$logs/asan:detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="log_path=$logs/ubsan:print_stacktrace=1:halt_on_error=1"
# The unit tests and fuzzers, then the server's Python tests on the sanitized binary. The servers
# run the tiny built-in model (RELAYLLM_DEFAULT_MODEL=none): these tests exercise the server's
# handling of requests, and the default model's forward pass under ASan would take most of the
# stage's time (the unit tests run the model code on tiny models already). Left out: the parity
# tests of the tokenizer and templates (the same code as the unit tests, slower), the CLI tests,
# the benchmark tools and the GuideLLM run (clients, not the server's code), the load and
# soak tests, whose RSS and throughput bounds do not hold under ASan's quarantine and slowdown,
# the vLLM API-shape tests (the same handlers as test_server_api, four times its run time
# under ASan), and the unit tests on the real tokenizers (RealTokenizers: each loads
# multi-megabyte vocabularies, about a minute apiece under ASan; their loader is what the
# model_json fuzz target drives), and the tensor-parallel runs under mpirun (Open MPI's own
# allocations, outside our code, would be reported as leaks).
export RELAYLLM_DEFAULT_MODEL=none
status=0
ctest --test-dir "$build" --output-on-failure -j"$jobs" --timeout 900 \
  -E '^py\.|^package\.|^tp\.|RealTokenizers' || status=$?
# The server tests wait on real time (shutdown, timeouts); under ASan on a busy machine a
# race in a test's timing can lose once (seen: test_server_shutdown's keep-alive poll), so a
# failed file runs once more. A sanitizer report fails the stage whatever the rerun says.
ctest --test-dir "$build" --output-on-failure -j"$jobs" --timeout 900 --repeat until-pass:2 \
  -R '^py\.test_(server_api|server_hardening|server_limits|server_relay|server_shutdown)$' \
  || status=$?
if compgen -G "$logs/*" >/dev/null; then
  echo "sanitizer reports:" >&2
  cat "$logs"/* >&2
  status=1
fi
echo "sanitizer stage: $(( $(date +%s) - start )) s in all" >&2
exit $status
