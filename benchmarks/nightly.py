"""The nights of a living archive, end to end with ``docscore score``: exit codes and row counts as readers see them.

    python benchmarks/nightly.py --model runs/demo/bundle [--rows 500] [--out runs/nightly]

Each scenario runs the real CLI in a fresh output directory and prints one Markdown table row: the exit code(s)
and the rows that ``OUT/**/*.parquet`` (polars, DuckDB), ``pyarrow.dataset`` and, when installed, polars and
DuckDB themselves count, against the rows the archive holds. The read-only and full-disk scenarios need root and
``unshare -m`` (a private read-only bind mount, a 24 KiB tmpfs) and are skipped otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "batch"))
from batch_data import make_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Night:
    def __init__(self, bundle: Path, work: Path, rows: int):
        self.bundle, self.work, self.rows = bundle, work, rows
        self.n = 0

    def archive(self, files: int = 4) -> Path:
        self.n += 1
        root = self.work / f"archive{self.n}"
        root.mkdir(parents=True)
        for i in range(files):
            pq.write_table(make_table(self.rows, seed=i, start_id=i * 10**6), root / f"part-{i}.parquet")
        return root

    def out(self) -> Path:
        return self.work / f"out{self.n}"

    def cmd(self, src, out, *extra) -> list[str]:
        return [sys.executable, "-m", "docscore", "score", str(src), "--model", str(self.bundle), "--output",
                str(out), "--id-column", "doc_id", "--no-progress", *extra]

    def score(self, src, out, *extra, env=None) -> int:
        res = subprocess.run(self.cmd(src, out, *extra), cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
        if res.returncode not in (0, -9):
            print(f"    [{res.returncode}] {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ''}",
                  file=sys.stderr)
        return res.returncode


def readers(out: Path) -> str:
    """Rows each reader counts: glob = every file under OUT/**/*.parquet (what polars and DuckDB read)."""
    paths = [p for p in out.rglob("*.parquet")]
    seen = {"glob": sum(pq.read_metadata(p).num_rows for p in paths if p.is_file())}
    seen["pyarrow.dataset"] = ds.dataset(out, format="parquet").count_rows()
    try:
        import polars as pl

        seen["polars"] = pl.scan_parquet(str(out / "**/*.parquet")).select(pl.len()).collect().item()
    except ImportError:
        pass
    try:
        import duckdb

        seen["duckdb"] = duckdb.sql(f"select count(*) from read_parquet('{out}/**/*.parquet')").fetchall()[0][0]
    except ImportError:
        pass
    values = set(seen.values())
    return str(values.pop()) if len(values) == 1 else ", ".join(f"{k} {v}" for k, v in seen.items())


def row(name: str, codes, seen: str, want: int, note: str = "") -> None:
    print(f"| {name} | {' → '.join(str(c) for c in codes)} | {seen} | {want} | {note} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="bundle directory")
    p.add_argument("--rows", type=int, default=500, help="rows per input file (4 files)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "nightly", help="work directory (emptied)")
    args = p.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    night = Night(args.model.resolve(), args.out.resolve(), args.rows)
    total = 4 * args.rows
    print("| scenario | exit codes | rows readers see | rows in archive | notes |")
    print("|---|---|---|---|---|")

    # two runs on one output (an overlapping cron job)
    src, out = night.archive(), night.out()
    release = night.work / "release"
    parts = str(max(2, args.rows // 4))  # several committed parts per file
    first = subprocess.Popen(night.cmd(src, out, "--checkpoint-rows", parts), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                              "DOCSCORE_FAILPOINT": f"part_committed:1:wait={release}"})
    while not list(out.rglob("part-00000.staged")) and first.poll() is None:
        time.sleep(0.05)
    second = night.score(src, out)
    release.touch()
    row("two runs on one output", [f"2nd {second}", f"1st {first.wait()}"], readers(out), total,
        "the second names the holder (host, pid, start)")

    # a run killed mid-way, then the next night
    src, out = night.archive(), night.out()
    killed = night.score(src, out, "--checkpoint-rows", parts, env={"DOCSCORE_FAILPOINT": "part_committed:6"})
    seen_killed = readers(out)
    rerun = night.score(src, out, "--checkpoint-rows", parts)
    row("SIGKILL, then rerun", [killed, rerun], f"{seen_killed} → {readers(out)}", total,
        "stale lock taken over, staging removed")

    # one rewritten old file plus one new file, under each --on-change
    for policy in ("rescore", "refuse", "keep"):
        src, out = night.archive(), night.out()
        night.score(src, out)
        pq.write_table(make_table(args.rows + 7, seed=99), src / "part-0.parquet")
        pq.write_table(make_table(50, seed=98, start_id=9 * 10**6), src / "part-new.parquet")
        code = night.score(src, out, "--on-change", policy)
        want = total + 50 + (7 if policy == "rescore" else 0)
        row(f"rewritten + new file, --on-change {policy}", [code], readers(out), total + 57,
            f"new file scored; {'stale' if policy != 'rescore' else 'fresh'} part-0 ({want} rows expected)")

    # a deleted input, with and without --prune
    for prune in (False, True):
        src, out = night.archive(), night.out()
        night.score(src, out)
        (src / "part-3.parquet").unlink()
        code = night.score(src, out, *(["--prune"] if prune else []))
        row(f"deleted input{' --prune' if prune else ''}", [code], readers(out), total - args.rows,
            "output removed" if prune else "stale output kept and reported, no _SUCCESS")

    # a same-size in-place edit
    src, out = night.archive(), night.out()
    path = src / "part-1.parquet"
    pq.write_table(make_table(args.rows, seed=1, start_id=10**6), path, compression="none",
                   write_statistics=False)
    night.score(src, out)
    data = bytearray(path.read_bytes())
    i = data.index(b"refund")
    data[i:i + 6] = b"REFUND"
    path.write_bytes(bytes(data))
    code = night.score(src, out, "--json")
    summary = (out / "_docscore_summary.json").read_text()
    row("same-size in-place edit", [code], readers(out), total,
        "detected: rescored" if '"action": "rescored"' in summary else "NOT detected")

    # binary text column (UTF-8 bytes) and 100 % failed rows
    src, out = night.archive(files=0), night.out()
    t = make_table(args.rows, seed=5)
    t = t.set_column(1, "text", pa.array([x.encode() for x in t.column("text").to_pylist()], pa.binary()))
    pq.write_table(t, src / "binary.parquet")
    code = night.score(src, out)
    errors = pq.read_table(out / "binary.parquet", columns=["error"]).column("error").null_count
    row("binary text column", [code], readers(out), args.rows, f"{errors} rows scored")
    src, out = night.archive(files=0), night.out()
    pq.write_table(t.set_column(1, "text", pa.nulls(args.rows, pa.string())), src / "nulls.parquet")
    row("every row fails (null text)", [night.score(src, out)], readers(out), args.rows,
        "exit 1: error rate 100 % > --max-error-rate 5 %")

    # directory conventions
    src, out = night.archive(), night.out()
    (src / "_temporary" / "0").mkdir(parents=True)
    (src / "_temporary" / "0" / "part-9.parquet").write_bytes(b"PAR1 half-written")
    (src / ".spark-staging").mkdir()
    pq.write_table(make_table(10), src / ".spark-staging" / "part-1.parquet")
    pq.write_table(make_table(10), src / ".hidden.parquet")
    row("_temporary/, .spark-staging/, .hidden", [night.score(src, out)], readers(out), total, "skipped")
    src, out = night.archive(files=0), night.out()
    for day in ("2026-11-27", "2026-11-28"):
        (src / f"date={day}").mkdir()
        pq.write_table(make_table(args.rows, seed=3), src / f"date={day}" / "part-0.parquet")
    code = night.score(src, out, "--passthrough", "date")
    row("hive date=…/ with --passthrough date", [code], readers(out), 2 * args.rows, "date is a column")
    src, out = night.archive(files=0), night.out()
    meta = pa.array([{"body": x} for x in make_table(args.rows, seed=4).column("text").to_pylist()])
    pq.write_table(pa.table({"doc_id": pa.array(range(args.rows)), "meta": meta}), src / "nested.parquet")
    row("--text-column meta.body", [night.score(src, out, "--text-column", "meta.body")], readers(out), args.rows,
        "")

    # read-only output and a full disk (needs root + unshare)
    if os.geteuid() == 0 and shutil.which("unshare"):
        src, out = night.archive(), night.out()
        out.mkdir()
        run = " ".join(night.cmd(src, out))
        code = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro {out} {out} && exec {run}"],
                              cwd=ROOT, capture_output=True).returncode
        rerun = night.score(src, out)
        row("read-only output, then writable", [code, rerun], readers(out), total, "one-line message")
        src, out = night.archive(), night.out()
        out.mkdir()
        copy = night.work / "full-disk-copy"
        run = " ".join(night.cmd(src, out, "--checkpoint-rows", parts))
        script = (f"mount -t tmpfs -o size=64k tmpfs {out} && {{ {run} 2>/dev/null; echo $? > {night.work}/rc1; }};"
                  f" mount -o remount,size=64m {out} && {{ {run}; echo $? > {night.work}/rc2; }}; cp -r {out} {copy}")
        subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True)
        codes = [(night.work / f"rc{i}").read_text().strip() for i in (1, 2)]
        row("full disk, then space freed", codes, readers(copy), total, "the rerun resumes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
