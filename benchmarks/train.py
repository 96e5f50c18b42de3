"""``docscore train`` measured: bf16 against fp32 on this CPU, and the memory of a large training file.

    python benchmarks/train.py [--steps 60] [--rss-rows 1000000] [--rss-steps 200] [--out runs/train-bench]

- precision: the embedded MiniLM body on ``samples/train.csv`` (evaluated on ``samples/eval.csv``), the same seed,
  data, batch and ``--max-steps`` for both; steps/s from the Trainer's own training time (model loading and the
  final evaluation excluded), eval macro-F1 of the kept model. bf16 runs only where the CPU has native bf16
  (AVX512_BF16 or AMX).
- memory: a Parquet file of ``--rss-rows`` short texts (the samples' texts, numbered), ``--max-steps
  --rss-steps``, evaluated on ``samples/eval.csv``: the peak RSS of the whole ``docscore train`` process.

Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def run_train(out: Path, train_data: Path, *extra: str) -> tuple[dict, float, float]:
    """Run ``docscore train`` as its own process; returns (metrics.json, wall seconds, peak RSS in MiB)."""
    cmd = [sys.executable, "-m", "docscore", "train", str(train_data), "--eval-data", str(SAMPLES / "eval.csv"),
           "--output", str(out), "--seed", "3", *extra]
    t0 = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w+") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {log.read()[-600:]}")
    return json.loads((out / "metrics.json").read_text()), wall, usage.ru_maxrss / 1024


def big_file(path: Path, rows: int) -> None:
    table = pcsv.read_csv(SAMPLES / "train.csv", parse_options=pcsv.ParseOptions(newlines_in_values=True))
    texts, labels = table.column("text").to_pylist(), table.column("label").to_pylist()
    with pq.ParquetWriter(path, pa.schema([("text", pa.string()), ("label", pa.string())])) as w:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            idx = [(start + i) % len(texts) for i in range(n)]
            w.write_table(pa.table({"text": [f"{texts[j][:200]} #{start + i}" for i, j in enumerate(idx)],
                                    "label": [labels[j] for j in idx]}), row_group_size=50_000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="optimisation steps of each precision run")
    ap.add_argument("--rss-rows", type=int, default=1_000_000, help="rows of the large training file")
    ap.add_argument("--rss-steps", type=int, default=200, help="--max-steps of the large-file run")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "train-bench", help="scratch folder (emptied)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from docscore.train.run import cpu_has_bf16

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    common = ["--max-steps", str(args.steps), "--per-device-train-batch-size", "16", "--max-length", "128",
              "--eval-steps", str(args.steps)]
    rows = []
    precisions = ["fp32"] + (["bf16"] if cpu_has_bf16() else [])
    for p in precisions:
        m, wall, _ = run_train(args.out / p, SAMPLES / "train.csv", *common, *(["--bf16"] if p == "bf16" else []))
        steps_s = m["global_step"] / m["train_seconds"]
        rows.append((p, m["global_step"], steps_s, m["best"]["macro_f1"], wall))
    print("| run | steps | steps/s | vs fp32 | eval macro-F1 | process wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for p, steps, sps, f1, wall in rows:
        print(f"| MiniLM {p} | {steps} | {sps:.2f} | {sps / rows[0][2]:.2f}× | {f1:.4f} | {wall:.1f} |")
    if args.rss_rows:
        data = args.out / "big.parquet"
        big_file(data, args.rss_rows)
        m, wall, peak = run_train(args.out / "big", data, "--max-steps", str(args.rss_steps),
                                  "--per-device-train-batch-size", "16", "--max-length", "64",
                                  "--eval-steps", str(args.rss_steps))
        print(f"\n{args.rss_rows:,}-row Parquet file, --max-steps {args.rss_steps}, MiniLM fp32: peak RSS "
              f"{peak:,.0f} MiB, {wall:.0f} s, eval macro-F1 {m['best']['macro_f1']:.4f}")


if __name__ == "__main__":
    main()
