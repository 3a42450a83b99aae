#!/usr/bin/env bash
# Installs dependencies, checks the sources' formatting, builds everything (the Python
# package's extension module too), installs the package with pip from that build tree
# (scripts/install_package.sh) and runs every CPU test (C++, Python, the package); then the
# sanitizer and fuzzing stage (scripts/test_sanitized.sh: about 15 minutes on two cores).
#   RELAYLLM_SANITIZED=0  skips that stage; =1 runs it whatever the time.
#   RELAYLLM_SANITIZED_AFTER_S  by default the stage is skipped, with a line saying so, when the
#     main stage alone took longer than this (default 1380 s): the whole command must end within
#     40 minutes on a two-core machine, and a machine that slow would not make it.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/install_deps.sh --test
scripts/check_format.sh
cmake -S . -B build -DRELAYLLM_BUILD_PYTHON=ON -DPython_EXECUTABLE="$PWD/.venv/bin/python" >&2
scripts/build.sh
scripts/install_package.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900
main_s=$(( $(date +%s) - start ))
echo "main stage: ${main_s} s" >&2
case "${RELAYLLM_SANITIZED:-auto}" in
  0) echo "sanitizer stage skipped (RELAYLLM_SANITIZED=0)" >&2 ;;
  1) scripts/test_sanitized.sh ;;
  *)
    if (( main_s > ${RELAYLLM_SANITIZED_AFTER_S:-1380} )); then
      echo "sanitizer stage SKIPPED: the main stage took ${main_s} s, more than" \
        "RELAYLLM_SANITIZED_AFTER_S=${RELAYLLM_SANITIZED_AFTER_S:-1380}; run scripts/test_sanitized.sh alone" >&2
    else
      scripts/test_sanitized.sh
    fi ;;
esac
