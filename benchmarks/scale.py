"""Memory stays flat as the archive grows: score generated archives of N and 10·N rows, each in its own process,
and report docs/s, tokens/s, pad fraction and peak RSS.

    python benchmarks/scale.py --model runs/demo/bundle --rows 10000 --factor 10 [--kind mixed] [--out runs/scale]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from docscore.batch import ScoreOptions, score_files
inputs, bundle, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
opts = ScoreOptions(id_column="doc_id", overwrite=True, threads=int(threads) if threads != "0" else None)
s = score_files([inputs], bundle, out, opts).to_dict()
s["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(s))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="bundle directory")
    p.add_argument("--rows", type=int, default=10_000, help="rows of the small archive")
    p.add_argument("--factor", type=int, default=10, help="the large archive has rows × factor")
    p.add_argument("--kind", default="mixed", choices=["mixed", "long"])
    p.add_argument("--threads", type=int, default=0, help="ORT threads (0: all cores)")
    p.add_argument("--out", default="runs/scale")
    args = p.parse_args(argv)

    from docscore.bench.archive import make_archive
    from docscore.bench.machine import machine_info

    out = Path(args.out)
    results = {"machine": machine_info(), "settings": vars(args), "runs": []}
    for rows in (args.rows, args.rows * args.factor):
        arch = out / f"archive-{rows}"
        if not arch.is_dir():
            make_archive(arch, rows, args.kind, shards=max(1, rows // 25_000), row_group_size=5000)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(arch), args.model, str(out / f"scores-{rows}"),
                               str(args.threads)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        s = json.loads(proc.stdout.strip().splitlines()[-1])
        s["archive_rows"] = rows
        s["process_s"] = time.perf_counter() - t0
        results["runs"].append(s)
        print(f"{rows:>8} rows: {s['docs_per_s']:.1f} docs/s, {s['tokens_per_s']:.0f} tokens/s, "
              f"pad {100 * s['pad_fraction']:.2f}%, peak RSS {s['peak_rss_mib']:.0f} MiB, wall {s['wall_s']:.0f} s, "
              f"variant {s['variant']}", flush=True)
    small, large = results["runs"]
    results["rss_growth"] = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
    print(f"peak RSS grew {100 * results['rss_growth']:.1f}% for {args.factor}× the rows")
    (out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
