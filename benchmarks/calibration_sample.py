"""A calibration sample for the static int8 variant, disjoint from the benchmark archives: ``--rows`` long
documentation files starting after the first ``--skip`` (the files `docscore bench throughput --generate long
--rows 600` scores), written as one Parquet file with a ``text`` column.

    python benchmarks/calibration_sample.py --out runs/bench/calibration-long.parquet [--rows 300] [--skip 600]

Give it to `docscore export-onnx --quantize int8 --calibration-data`: int8 calibrated on text like the archives
it scores stays closest to fp32 there (README, "Per variant").
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from docscore.bench.archive import make_archive


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="Parquet file to write")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--skip", type=int, default=600, help="documentation files left out (the benchmark's)")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="docscore-calib-"))
    try:
        (part,) = make_archive(scratch, args.rows, "long", shards=1, skip=args.skip, row_group_size=args.rows)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(part), out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
