#!/usr/bin/env bash
# Installs dependencies, builds, and runs `relayllm` with the given arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh --target relayllm
exec build/relayllm "$@"
