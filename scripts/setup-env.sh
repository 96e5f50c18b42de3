#!/usr/bin/env bash
# Create (or reuse) .venv with docscore and everything the demo and the tests need.
# torch is pinned to the CPU build 2.13.0 *before* anything that depends on torch, so pip never pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || { echo "setup-env: creating .venv"; "$PY" -m venv .venv; }
echo "setup-env: 1/3 pip"
.venv/bin/python -m pip install -q --upgrade pip
echo "setup-env: 2/3 torch==2.13.0 (the CPU build; a few minutes on a fresh machine)"
.venv/bin/python -m pip install -q "torch==2.13.0"
echo "setup-env: 3/3 docscore with its train, dev, ray and spark extras (a few minutes on a fresh machine)"
.venv/bin/python -m pip install -q -e ".[train,dev,ray,spark${DOCSCORE_EXTRAS:+,$DOCSCORE_EXTRAS}]"
# Azurite, the Azure Blob emulator of the object-storage tests, from npm into .tools/azurite (gitignored). Never
# fails the setup: without npm (or the registry) the Azure tests skip, and the suite fails on that unexpected skip
# (tests/skips.py) unless DOCSCORE_ALLOW_SKIPS=1.
if command -v npm >/dev/null 2>&1; then
  if [ ! -x .tools/azurite/node_modules/.bin/azurite-blob ]; then
    mkdir -p .tools/azurite
    npm install --prefix .tools/azurite --no-audit --no-fund --silent azurite@3 >/dev/null 2>&1 \
      || echo "setup-env: npm install azurite failed; the Azure Blob tests will skip and fail the suite" >&2
  fi
else
  echo "setup-env: npm not found; the Azure Blob tests will skip and fail the suite" >&2
fi
