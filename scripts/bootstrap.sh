#!/usr/bin/env bash
# Creates ./.venv (Python 3.11) and installs requirements.txt + this package in editable
# mode. Idempotent: skips pip when requirements.txt and pyproject.toml are unchanged since
# the last successful install. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REMEDIS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating virtual environment $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.remedis_installed"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[bootstrap] installing requirements (first run: about half a minute with uv, a few with pip)"
  # uv installs the same pinned wheels as pip, in parallel: ~15 s instead of 2-3 min on a
  # 2-core machine (measured 2026-12-03). Without it (no network to fetch it, or
  # REMEDIS_USE_PIP=1) pip does the same install.
  if [ "${REMEDIS_USE_PIP:-0}" != "1" ] && "$VENV/bin/python" -m pip install -q uv; then
    VIRTUAL_ENV="$VENV" "$VENV/bin/python" -m uv pip install -q --python "$VENV/bin/python" \
      -r "$ROOT/requirements.txt"
    VIRTUAL_ENV="$VENV" "$VENV/bin/python" -m uv pip install -q --python "$VENV/bin/python" \
      --no-deps -e "$ROOT"
  else
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt"
    "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
