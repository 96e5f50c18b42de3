#!/usr/bin/env bash
# Create (or reuse) .venv with docscore and everything the demo and the tests need.
# torch is pinned to the CPU build 2.13.0 *before* anything that depends on torch, so pip never pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[train,dev,ray,spark${DOCSCORE_EXTRAS:+,$DOCSCORE_EXTRAS}]"
