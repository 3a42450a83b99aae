#!/usr/bin/env bash
# Checks that the project's C++ and CUDA sources are laid out as clang-format
# (Debian's package, installed by scripts/install_deps.sh --test) lays them out
# with the committed .clang-format; prints each difference and exits 1 when there
# is one. With --fix, formats them in place instead.
# Usage: scripts/check_format.sh [--fix]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format not found: run scripts/install_deps.sh --test" >&2; exit 2; }

# Generated files keep their generator's layout; test data is not source.
mapfile -t files < <(find src python tests bench tools -type f \
  \( -name '*.h' -o -name '*.cc' -o -name '*.cu' -o -name '*.cuh' \) \
  -not -path 'tests/data/*' -not -path 'src/relayllm/tokenizer/unicode_tables.cc' | sort)

if [ "${1:-}" = --fix ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
if ! clang-format --dry-run -Werror "${files[@]}"; then
  echo "check_format: the files above differ from clang-format's layout; run scripts/check_format.sh --fix" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
