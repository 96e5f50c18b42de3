#!/usr/bin/env bash
# The README's main-job command, on the embedded all-MiniLM-L6-v2 body and the bundled samples:
# train -> export-onnx (parity- and invariance-gated fp32 / optimized / static int8 [/ bf16]) -> verify -> score the sample archive -> report.
# Everything lands in runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
DS=.venv/bin/docscore
OUT=runs/demo
mkdir -p "$OUT"

echo "== 1/5 train: embedded all-MiniLM-L6-v2 body on samples/train.csv -> $OUT/checkpoint"
$DS train samples/train.csv --eval-data samples/eval.csv --output "$OUT/checkpoint" --epochs 2

# bf16 (OpenVINO) only where the CPU computes bf16 natively; elsewhere the gate could not verify it.
BF16=""
grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && BF16="--bf16"
echo "== 2/5 export-onnx: ONNX bundle with optimized, static int8 ${BF16:+and bf16 }variants, each behind the parity and invariance gate -> $OUT/bundle"
$DS export-onnx "$OUT/checkpoint" --output "$OUT/bundle" --optimize --quantize int8 $BF16 --overwrite

echo "== 3/5 verify: file hashes and parity against the checkpoint"
$DS verify --model "$OUT/bundle" --checkpoint "$OUT/checkpoint"

echo "== 4/5 score: samples/archive/*.parquet -> $OUT/scores (resumable; rerun skips finished shards)"
$DS score samples/archive --model "$OUT/bundle" --output "$OUT/scores" --id-column doc_id --passthrough source --overwrite

echo "== 5/5 report: label distribution and confidence"
$DS report --output "$OUT/scores"
echo "== done: checkpoint, bundle and scores are in $OUT/; run later commands as .venv/bin/docscore (or source .venv/bin/activate)"
