#!/usr/bin/env bash
# Create .venv (if missing) and install napari-unetseg into it with the extras named in
# $1 (e.g. "test"). Sourced by demo.sh and test.sh; safe to run again (it reinstalls
# only when pyproject.toml, constraints.txt or the extras changed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${1:-}"
python_bin="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python_bin --version 2>&1)"
  "$python_bin" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

# Without a CUDA GPU, pin torch to a CPU-sized build (constraints.txt); with one, let pip
# choose the CUDA build that matches the driver.
pin=(-c constraints.txt)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  pin=()
  echo "[setup] CUDA GPU found: installing torch with CUDA support"
fi

spec="."
[ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.unetseg-installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing napari-unetseg${extras:+[$extras]} into .venv"
  python -m pip install -q --upgrade pip
  python -m pip install -q "${pin[@]}" -e "$spec"
  rm -f .venv/.unetseg-installed-*
  touch "$stamp"
fi
