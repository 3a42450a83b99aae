#!/usr/bin/env bash
# Installs dependencies, checks the sources' formatting, builds everything and runs every CPU
# test (C++ and Python); with RELAYLLM_SANITIZED=1, then the sanitizer and fuzzing stage
# (scripts/test_sanitized.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh --test
scripts/check_format.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900
if [ "${RELAYLLM_SANITIZED:-0}" = 1 ]; then scripts/test_sanitized.sh; fi
