"""The README's per-variant table: invariance (from the gate's report in the manifest), label agreement and max
|Δscore| against the fp32 variant on real text, and docs/s against the plain PyTorch loop and the dynamic int8
variant, from one `docscore bench throughput` result (same run, same documents).

    python benchmarks/variants_table.py --model BUNDLE --throughput benchmarks/results/long/throughput.json \\
        [--rows 600] [--generate long]

Scores the same generated archive of real documentation text with every CPU variant (so the agreement is measured
on other text than the gate's) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from docscore.batch import ScoreOptions, score_files
from docscore.runtime.choose import why_not
from docscore.bench.archive import make_archive
from docscore.bundle import load_bundle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--throughput", required=True, help="throughput.json from `docscore bench throughput`")
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--generate", default="long", choices=["long", "mixed"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    bundle = load_bundle(args.model)
    names = [n for n in bundle.variants if why_not(bundle, n, "cpu") in (None, "batch-dependent (scores change "
                                                                              "with batch companions)")]
    scratch = Path(tempfile.mkdtemp(prefix="docscore-variants-"))
    make_archive(scratch / "archive", args.rows, args.generate, shards=2)
    outs = {}
    for name in names:
        out = scratch / name
        score_files([str(scratch / "archive")], bundle, out, ScoreOptions(variant=name, threads=args.threads))
        outs[name] = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("*.parquet"))])
    ref = outs["fp32"]
    score_cols = [c for c in ref.column_names if c.startswith("score_")]
    runs = json.loads(Path(args.throughput).read_text())["results"]
    speed = {(r["pipeline"], r["variant"]): r["docs_per_s"] for r in runs}
    loop = speed.get(("pytorch-loop", "eager"))
    dyn = speed.get(("score", "int8-dynamic"))
    print("| variant | runtime / precision | invariance (alone vs batched, 2 budgets, windows, threads) | labels = fp32 "
          f"({ref.num_rows} real docs) | max abs Δscore vs fp32 | `score` docs/s | × plain PyTorch loop | "
          "× int8-dynamic |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in names:
        entry, out = bundle.variants[name], outs[name]
        inv = entry.get("invariance") or {}
        if inv.get("bit_identical"):
            inv_s = "bit-identical"
        else:
            inv_s = f"**batch-dependent**: max abs Δscore {inv.get('max_abs_score_diff', float('nan')):.2g}, " \
                    f"{inv.get('label_changes', '?')} label changes"
        ok = [i for i, e in enumerate(ref.column("error").to_pylist()) if e is None]
        agree = np.mean([a == b for a, b in zip(np.asarray(ref.column("label").to_pylist(), dtype=object)[ok],
                                                np.asarray(out.column("label").to_pylist(), dtype=object)[ok])])
        delta = max(float(np.nanmax(np.abs(out.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                                           - ref.column(c).to_numpy(zero_copy_only=False).astype(np.float64))))
                    for c in score_cols)
        s = speed.get(("score", name))
        fmt = lambda x: f"{x:.2f}×" if x else "–"  # noqa: E731
        print(f"| {name} | {entry.get('runtime', 'onnxruntime')} / {entry.get('precision', 'f32')} | {inv_s} | "
              f"{agree:.1%} | {delta:.1e} | {s or float('nan'):.1f} | {fmt(s / loop if s and loop else None)} | "
              f"{fmt(s / dyn if s and dyn else None)} |")
    if loop:
        print(f"\nplain PyTorch loop: {loop:.1f} docs/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
