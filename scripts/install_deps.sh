#!/usr/bin/env bash
# Installs what building and testing relayllm needs on a fresh Debian/Ubuntu machine:
# Debian packages (only the missing ones) and a project-local Python venv.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config python3-venv
          nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev libpcre2-dev libxxhash-dev
          libgtest-dev)
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

if [ "${RELAYLLM_SKIP_VENV:-0}" != 1 ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "creating the Python venv in .venv" >&2
    python3 -m venv .venv
  fi
  if ! cmp -s requirements-test.txt .venv/.installed-requirements 2>/dev/null; then
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt >&2
    cp requirements-test.txt .venv/.installed-requirements
  fi
fi
