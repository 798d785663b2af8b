#!/usr/bin/env bash
# Creates, once, the Python 3.10 virtualenv with MLflow that the registry tests start a tracking
# server from, and prints its python. MLflow cannot live in the project's virtualenv (it needs
# protobuf 4+, TFX 1.16 pins protobuf 3), so it gets its own, pinned by mlflow_requirements.txt.
#   usage: tests/mlflow_venv.sh [VENV_DIR]
#   default VENV_DIR: ${LITEDET_CACHE:-~/.cache/litedet}/mlflow-venv
# Rebuilt when mlflow_requirements.txt changes; concurrent callers wait on a lock.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
req="$here/mlflow_requirements.txt"
venv="${1:-${LITEDET_CACHE:-$HOME/.cache/litedet}/mlflow-venv}"
stamp="$venv/.litedet-requirements-sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Creating the MLflow virtualenv in $venv (about a minute) ..." >&2
  rm -rf "$venv"
  py=$("$here/../.ci/find-python3.10")
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  "$venv/bin/python" -c "import mlflow; assert mlflow.__version__ == '2.22.5', mlflow.__version__"
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
