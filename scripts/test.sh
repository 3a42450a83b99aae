#!/usr/bin/env bash
# Installs dependencies, checks the sources' formatting, builds everything (the Python
# package's extension module too), installs the package with pip from that build tree
# (scripts/install_package.sh) and runs every CPU test (C++, Python, the package); with
# RELAYLLM_SANITIZED=1, then the sanitizer and fuzzing stage (scripts/test_sanitized.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh --test
scripts/check_format.sh
cmake -S . -B build -DRELAYLLM_BUILD_PYTHON=ON -DPython_EXECUTABLE="$PWD/.venv/bin/python" >&2
scripts/build.sh
scripts/install_package.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900
if [ "${RELAYLLM_SANITIZED:-0}" = 1 ]; then scripts/test_sanitized.sh; fi
