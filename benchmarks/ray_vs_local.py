"""docs/s of `docscore score` on one machine, local engine vs a local Ray instance, same archive, same run —
each timed the way a user waits for it.

    python benchmarks/ray_vs_local.py --model BUNDLE [--rows 2000] [--kind mixed] [--num-cpus 2] [--workers N]

The Ray timing includes everything a `docscore score --engine ray` run pays: `ray.init` of a private instance,
actor start-up and session loads, scoring, and `ray.shutdown`. The local timing is one `score_files` call,
session load included. Both sides get the same warm-up first: a one-row archive scored locally in this process
(imports, page cache of the model file); Ray's worker processes start cold, which is part of Ray's cost.

Prints JSON: local and Ray wall time and docs/s, their ratio, and Ray's time split into `ray.init`, the scoring
call and shutdown. Each input file is one row group, so the Ray run also exercises the repartitioning of
single-block files.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from docscore.batch import ScoreOptions, score_files
from docscore.batch.ray import RayOptions, ray_connection, score_files_ray
from docscore.bench.archive import make_archive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bundle directory")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--kind", default="mixed", choices=["mixed", "long"])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--variant", default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="dsbench-") as tmp:
        tmp = Path(tmp)
        make_archive(tmp / "in", args.rows, kind=args.kind, shards=args.shards, row_group_size=args.rows)
        one = tmp / "one"
        one.mkdir()
        pq.write_table(pq.read_table(tmp / "in" / "part-0000.parquet").slice(0, 1), one / "one.parquet")
        opts = ScoreOptions(id_column="doc_id", variant=args.variant)  # local: every core

        score_files([one], args.model, tmp / "warm", opts)  # the shared warm-up (see the module docstring)
        local = score_files([tmp / "in"], args.model, tmp / "local", opts)

        conn = ray_connection(RayOptions(num_cpus=args.num_cpus, tmp_dir=tempfile.mkdtemp(prefix="dsray-")))
        t_start = time.perf_counter()
        conn.__enter__()
        init_s = time.perf_counter() - t_start
        try:
            t = time.perf_counter()
            ray = score_files_ray([tmp / "in"], args.model, tmp / "ray-out", opts, workers=args.workers)
            run_s = time.perf_counter() - t
        finally:
            t = time.perf_counter()
            conn.__exit__(None, None, None)
            shutdown_s = time.perf_counter() - t
        ray_wall = time.perf_counter() - t_start

    ray_docs_s = ray.rows / ray_wall
    print(json.dumps({
        "model": args.model, "variant": local.variant, "rows": local.rows, "kind": args.kind,
        "ray_num_cpus": args.num_cpus,
        "local": {"wall_s": round(local.wall_s, 2), "docs_per_s": round(local.docs_per_s, 1),
                  "pad_fraction": round(local.pad_fraction, 4)},
        "ray": {"wall_s": round(ray_wall, 2), "docs_per_s": round(ray_docs_s, 1),
                "pad_fraction": round(ray.pad_fraction, 4),
                "docs_per_s_scoring_only": round(ray.docs_per_s, 1)},
        "ray_over_local_docs_per_s": round(ray_docs_s / local.docs_per_s, 3),
        "ray_time_split": {"ray_init_s": round(init_s, 2), "score_call_s": round(run_s, 2),
                           "shutdown_s": round(shutdown_s, 2)},
    }, indent=2))


if __name__ == "__main__":
    main()
