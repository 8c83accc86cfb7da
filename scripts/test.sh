#!/usr/bin/env bash
# Runs the whole test suite (installs what it needs first). Extra args go to pytest.
# Tests run in REMEDIS_TEST_WORKERS processes (pytest-xdist; default: one per core, at most
# 8, as each worker holds its own TensorFlow, about 1.5 GB), one
# test module per worker at a time so module fixtures are built once; REMEDIS_TEST_WORKERS=0
# runs everything in this process.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
# TensorFlow's C++ start-up lines (no CUDA driver, cuInit) ignore TF_CPP_MIN_LOG_LEVEL; an
# xdist worker's are relayed after pytest's closing line, which must stay last. Drop just those.
tf_startup='^(WARNING: All log messages before absl::InitializeLog\(\) is called|[IWE][0-9]{4} [0-9:. ]+[0-9]+ (cudart_stub|cuda_platform|cuda_executor|cuda_diagnostics|cpu_feature_guard)\.cc)'
cores="$(nproc)"
workers="${REMEDIS_TEST_WORKERS:-$(( cores > 8 ? 8 : cores ))}"
if [ "$workers" -gt 0 ]; then
  exec python -m pytest -q -n "$workers" --dist loadscope "$@" 2> >(grep -vE "$tf_startup" >&2)
fi
exec python -m pytest -q "$@"
