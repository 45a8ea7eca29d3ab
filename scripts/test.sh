#!/usr/bin/env bash
# One command from a fresh clone to the full test suite, GUI tests included: sets up
# .venv with the test extras, installs a virtual X server and Mesa OpenGL from Debian
# when they are missing (and this shell may), lints, type-checks, then runs pytest.
# Extra arguments go to pytest (e.g. -m "not slow" for the fast tier). With CI=true (or
# UNETSEG_CHECK_DOCS=1 / UNETSEG_CHECK_WHEEL=1) it also builds the documentation site
# with --strict and installs the built wheel as users do (scripts/check_wheel.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=setup_env.sh
. "$here/setup_env.sh" test

x_packages=(xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3
  libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${x_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
elif ! command -v Xvfb >/dev/null 2>&1; then
  missing=("${x_packages[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd=(sudo -n)
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ ${#sudo_cmd[@]} -gt 0 ]; }; then
    echo "[test] installing a virtual X server and Mesa OpenGL: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq </dev/null
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
  elif ! command -v Xvfb >/dev/null 2>&1; then
    echo "[test] WARNING: no Xvfb and no way to install it: GUI tests will be skipped"
  else
    echo "[test] WARNING: missing ${missing[*]}; GUI tests may fail"
  fi
fi

echo "[test] ruff"
ruff check src tests benchmarks
ruff format --check src tests benchmarks
echo "[test] mypy"
python -m mypy
if [ "${CI:-}" = "true" ] || [ "${UNETSEG_CHECK_DOCS:-}" = "1" ]; then
  echo "[test] mkdocs build --strict"
  site_dir="$(mktemp -d "${TMPDIR:-/tmp}/unetseg-site.XXXXXX")"
  NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict --quiet --site-dir "$site_dir"
  rm -rf "$site_dir"
fi
echo "[test] pytest"
python -m pytest "$@"
if [ "${CI:-}" = "true" ] || [ "${UNETSEG_CHECK_WHEEL:-}" = "1" ]; then
  echo "[test] the wheel as users install it"
  bash "$here/check_wheel.sh"
fi
