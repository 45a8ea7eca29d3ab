#!/usr/bin/env bash
# One command from a fresh clone to a trained model: sets up .venv, then runs the
# headless demo on the built-in synthetic sample. Extra arguments go to `unetseg demo`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=setup_env.sh
. "$here/setup_env.sh" ""
exec unetseg demo "$@"
