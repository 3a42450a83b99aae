#!/usr/bin/env bash
# Checks the dependency rules of docs/architecture.md: each folder of src/relayllm may
# include headers only from the folders listed for it (and its own). Prints every
# include that breaks a rule, as file:line, and exits 1 when there is one.
# Usage: scripts/check_layers.sh [SOURCE_ROOT]
set -euo pipefail
root=${1:-"$(dirname "$0")/.."}
cd "$root/src/relayllm"

# folder -> the folders it may include besides itself (keep in step with docs/architecture.md).
declare -A allowed=(
  [common]=""
  [dist]="common"
  [formats]="common"
  [backend]="dist common"
  [backend/cpu]="backend dist common"
  [backend/cuda]="backend dist common"
  [kv]="common"
  [tokenizer]="formats common"
  [chat]="tokenizer common"
  [tools]="common"
  [model]="backend dist tokenizer formats common"
  [structured]="tokenizer common"
  [engine]="model kv backend dist structured tokenizer common"
  [serving]="engine model kv backend backend/cpu backend/cuda dist chat structured tools tokenizer formats common"
  [server]="serving engine model kv backend dist chat structured tools tokenizer common"
  # The Python package's extension module (python/bindings, outside src/relayllm): a client
  # of the engine like the CLI, but never of the HTTP server or a backend's insides.
  [../../python/bindings]="serving engine model kv backend chat structured tools tokenizer formats common"
)

# The layer a file or an included header belongs to: its folder, with backend's
# cpu/ and cuda/ as layers of their own.
layer_of() {
  local path=$1
  case $path in
    backend/cpu/*) echo backend/cpu ;;
    backend/cuda/*) echo backend/cuda ;;
    ../../python/bindings/*) echo ../../python/bindings ;;
    */*) echo "${path%%/*}" ;;
    *) echo "" ;;
  esac
}

status=0
while IFS= read -r file; do
  from=$(layer_of "$file")
  if [[ -z ${allowed[$from]+set} ]]; then
    echo "$file: folder '$from' has no rule in scripts/check_layers.sh (add one, and to docs/architecture.md)"
    status=1
    continue
  fi
  while IFS=: read -r line header; do
    to=$(layer_of "$header")
    [[ $to == "$from" ]] && continue
    if [[ " ${allowed[$from]} " != *" $to "* ]]; then
      echo "src/relayllm/$file:$line: $from/ may not include relayllm/$header"
      status=1
    fi
  done < <(grep -n -o -E '^#include "relayllm/[^"]+"' "$file" | sed -E 's/#include "relayllm\/([^"]+)"/\1/')
done < <({
  find . -type f \( -name '*.h' -o -name '*.cc' -o -name '*.cu' -o -name '*.cuh' \) | sed 's#^\./##'
  [ -d ../../python/bindings ] && find ../../python/bindings -type f \( -name '*.h' -o -name '*.cc' \)
} | sort)
exit $status
