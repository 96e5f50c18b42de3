"""A night costs what changed: score reuse against scoring everything, side by side in one run.

    python benchmarks/reuse.py --model runs/demo/bundle [--rows 2000] [--variant int8] [--out runs/reuse-bench]

Every candidate is the real CLI (``python -m docscore score``, a whole process: start-up, bundle load, reading,
writing) on the same documents (``docscore.bench.archive``'s mixed archive: 80 % short texts, 20 % long), the same
variant, truncation and batching, timed wall to wall. Scenarios:

- compaction: the archive's files merged into one new file (same rows, new name, old files deleted, ``--prune``)
  and scored into last night's output, against scoring the compacted archive into a fresh output;
- edits: every file rewritten with 2 % of its rows edited and 2 % appended, against a full rescore (fresh output);
- duplicates: an archive where half the rows repeat another row's text, with reuse (the default) against
  ``--no-reuse``, both into fresh outputs;
- index: the in-memory index for 10 million cached rows: its bytes and the time to build it.

Each reuse run's outputs are checked byte for byte against the baseline's, and ``inferred_rows`` against the rows
that changed. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docscore.bench.archive import make_archive  # noqa: E402


def score(src: Path, out: Path, model: Path, *extra: str) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "docscore", "score", str(src), "--model", str(model), "--output", str(out),
           "--id-column", "doc_id", "--no-progress", "--json", *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()[-400:]}")
    return wall, json.loads(res.stdout)


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*.parquet"))}


def rows_of(root: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(root.glob("*.parquet"))])


def compaction(work: Path, model: Path, rows: int, extra: list[str]) -> dict:
    src, out = work / "compaction" / "archive", work / "compaction" / "out"
    make_archive(src, rows, kind="mixed", shards=8, seed=1)
    score(src, out, model, *extra)  # last night
    table = rows_of(src)
    for p in src.glob("*.parquet"):
        p.unlink()
    pq.write_table(table, src / "compacted-0000.parquet", row_group_size=1000)
    t_reuse, s = score(src, out, model, "--prune", *extra)
    t_full, _ = score(src, work / "compaction" / "fresh", model, *extra)
    assert outputs(out) == outputs(work / "compaction" / "fresh"), "compaction: outputs differ from a fresh run"
    return {"scenario": "compaction (8 files -> 1, old deleted)", "baseline": "fresh output", "rows": s["rows"],
            "inferred": s["inferred_rows"], "expected": 0, "t_base": t_full, "t_reuse": t_reuse}


def edits(work: Path, model: Path, rows: int, extra: list[str]) -> dict:
    src, out = work / "edits" / "archive", work / "edits" / "out"
    paths = make_archive(src, rows, kind="mixed", shards=8, seed=2)
    score(src, out, model, *extra)
    rng = random.Random(7)
    changed = 0
    for i, path in enumerate(paths):
        t = pq.read_table(path)
        texts = t.column("text").to_pylist()
        n = len(texts)
        for j in rng.sample(range(n), max(1, n * 2 // 100)):
            texts[j] = texts[j] + f" (edited {i}-{j})"
            changed += 1
        add = max(1, n * 2 // 100)
        new = [f"appended note {i}-{k}: " + texts[rng.randrange(n)][:300] + f" #{rng.random()}" for k in range(add)]
        changed += add
        ids = t.column("doc_id").to_pylist() + list(range(10**7 + i * 1000, 10**7 + i * 1000 + add))
        pq.write_table(pa.table({"doc_id": pa.array(ids, pa.int64()), "text": texts + new}), path)
    t_reuse, s = score(src, out, model, *extra)
    t_full, _ = score(src, work / "edits" / "fresh", model, *extra)
    assert outputs(out) == outputs(work / "edits" / "fresh"), "edits: outputs differ from a fresh run"
    return {"scenario": "each file: 2 % edited + 2 % appended", "baseline": "full rescore", "rows": s["rows"],
            "inferred": s["inferred_rows"], "expected": changed, "t_base": t_full, "t_reuse": t_reuse}


def duplicates(work: Path, model: Path, rows: int, extra: list[str]) -> dict:
    base = work / "dups" / "unique"
    make_archive(base, rows // 2, kind="mixed", shards=1, seed=3)
    texts = rows_of(base).column("text").to_pylist()
    rng = random.Random(11)
    doubled = texts + [rng.choice(texts) for _ in range(rows - len(texts))]
    rng.shuffle(doubled)
    src = work / "dups" / "archive"
    src.mkdir(parents=True)
    per = -(-len(doubled) // 4)
    for s in range(4):
        part = doubled[s * per:(s + 1) * per]
        pq.write_table(pa.table({"doc_id": pa.array(range(s * per, s * per + len(part)), pa.int64()),
                                 "text": part}), src / f"part-{s:04d}.parquet", row_group_size=1000)
    t_reuse, s = score(src, work / "dups" / "out", model, *extra)
    t_full, _ = score(src, work / "dups" / "plain", model, "--no-reuse", *extra)
    assert outputs(work / "dups" / "out") == outputs(work / "dups" / "plain"), "duplicates: outputs differ"
    return {"scenario": "50 % duplicate texts", "baseline": "--no-reuse", "rows": s["rows"],
            "inferred": s["inferred_rows"], "expected": len(set(doubled)), "t_base": t_full, "t_reuse": t_reuse}


def index_cost(n: int = 10_000_000) -> dict:
    from docscore.batch.reuse import ReuseIndex

    rng = np.random.default_rng(0)
    hi, lo = rng.integers(0, 2**63, n, dtype=np.uint64), rng.integers(0, 2**63, n, dtype=np.uint64)
    src, row = np.zeros(n, np.uint32), np.arange(n, dtype=np.uint32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    index = ReuseIndex(hi, lo, src, row)
    build = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"rows": n, "mib": index.nbytes / 2**20, "build_s": build, "peak_extra_mib": peak / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="the bundle")
    ap.add_argument("--rows", type=int, default=2000, help="rows per archive")
    ap.add_argument("--variant", default=None, help="the variant every run uses (default: the host's choice)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "reuse-bench", help="scratch folder (emptied)")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    extra = ["--variant", args.variant] if args.variant else []
    results = [compaction(args.out, args.model, args.rows, extra), edits(args.out, args.model, args.rows, extra),
               duplicates(args.out, args.model, args.rows, extra)]
    print("| scenario | baseline | rows | inferred_rows (expected) | baseline s | reuse s | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['scenario']} | {r['baseline']} | {r['rows']:,} | {r['inferred']:,} ({r['expected']:,}) | "
              f"{r['t_base']:.1f} | {r['t_reuse']:.1f} | **{r['t_base'] / r['t_reuse']:.1f}×** |")
    ix = index_cost()
    print(f"\nindex for {ix['rows']:,} cached rows: {ix['mib']:.0f} MiB ({ix['mib'] * 2**20 / ix['rows']:.0f} bytes a "
          f"row), built in {ix['build_s']:.2f} s (peak extra RSS while sorting {ix['peak_extra_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
