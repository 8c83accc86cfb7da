#!/usr/bin/env bash
# Runs the main job: the full three-stage REMEDIS pipeline on the embedded synthetic
# dataset (installs what it needs first). Extra args go to experiments.demo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec python -m experiments.demo "$@"
