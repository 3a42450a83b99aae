#!/usr/bin/env bash
# Installs the Python package `relayllm` into build/python-env (a venv that also sees .venv's
# packages: the default model, pytest, the oracles) with pip, reusing the main build tree
# (build/, configured with -DRELAYLLM_BUILD_PYTHON=ON by scripts/test.sh): scikit-build-core
# reconfigures it with its own settings, finds everything built and only installs, so the
# engine is compiled once for the CLI, the tests and the package.
# Usage: scripts/install_package.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
cache="$build/CMakeCache.txt"
[ -f "$cache" ] || { echo "$cache: configure and build first (scripts/test.sh does)" >&2; exit 1; }
cached() { sed -n "s/^$1:[A-Z]*=//p" "$cache"; }
[ "$(cached RELAYLLM_BUILD_PYTHON)" = ON ] ||
  { echo "$build was configured without -DRELAYLLM_BUILD_PYTHON=ON" >&2; exit 1; }

env_dir="$build/python-env"
if [ ! -x "$env_dir/bin/python" ]; then
  .venv/bin/python -m venv --without-pip "$env_dir"
  site=$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  .venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/project_venv.pth"
fi
# The same generator and compiler as the tree was configured with: a different one would make
# CMake drop its cache and rebuild everything.
export CMAKE_GENERATOR="$(cached CMAKE_GENERATOR)"
export CXX="$(cached CMAKE_CXX_COMPILER)"
.venv/bin/python -m pip --python "$env_dir/bin/python" install -q --disable-pip-version-check \
  --no-build-isolation --no-deps --force-reinstall \
  -C build-dir="$build" -C cmake.define.RELAYLLM_BUILD_TESTS=ON . >&2
echo "relayllm installed into $env_dir" >&2
