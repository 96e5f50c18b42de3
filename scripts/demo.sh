#!/usr/bin/env bash
# The README's main-job command: on the embedded all-MiniLM-L6-v2 body and the bundled samples,
# train a classifier and print its metrics. Everything lands in runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
DS=.venv/bin/docscore
OUT=runs/demo
mkdir -p "$OUT"
echo "== 1/1 train (embedded all-MiniLM-L6-v2 body, samples/train.csv -> $OUT/checkpoint)"
$DS train samples/train.csv --eval-data samples/eval.csv --output "$OUT/checkpoint" --epochs 2
