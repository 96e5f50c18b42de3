"""docs/s of `docscore score` on object storage against a local disk: the same archive scored local → local and
s3 → s3 (a local moto S3 endpoint this script starts on 127.0.0.1), alternating, in one process.

    python benchmarks/s3_vs_local.py --model BUNDLE [--rows 3000] [--kind mixed] [--shards 4] [--repeats 3]
                                     [--bundle-on-s3] [--threads N] [--out result.json]

What it does: generates an archive of real documentation text (``docscore.bench.archive``), uploads it to a
bucket on the local endpoint, then for ``--repeats`` rounds scores it with ``score_files`` once per candidate,
each into a fresh output, with the same options:

- ``local``: inputs, bundle and output on the local disk;
- ``s3``: inputs and output on the S3 endpoint, the bundle from the local disk;
- ``s3-bundle-s3`` (with ``--bundle-on-s3``): inputs, output and the bundle on the endpoint (the bundle is copied
  once into a fresh local cache, ``$DOCSCORE_CACHE``, during the warm-up, and hash-checked there on every run, as
  on a scoring host that ran the night before).

The order of the candidates alternates between rounds (A B, B A, ...), so drift of the machine (another job, the
page cache, thermal state) does not favour one. Before the rounds, every candidate scores a one-row archive
untimed (imports, session load, the bundle cache). A run's time is the whole ``score_files`` call: discovery,
the writer lock, the manifest, reading, scoring, uploads, ``_SUCCESS``.

The endpoint is moto (Python) in a process of its own on the same machine: its CPU time during each run is
reported (``server_cpu_s``), because on a small machine it competes with the scorer for the cores, which a real
remote store would not; the S3 numbers are therefore a pessimistic bound for the store's CPU cost and an
optimistic one for its latency (loopback, no network).

Prints JSON (stdout, or ``--out``): per candidate the wall time and docs/s of every round and their medians,
the median over rounds of the per-round ratio s3/local of docs/s, and whether every output of every S3 run is
byte-identical to the local run's (``identical``, with the differences listed if not). A short summary goes to
stderr. Exit 0 when the outputs are identical, 1 when they differ.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import HelpFormatter as _Help, add_archive_args, emit_json, LocalS3, local_tree, outputs  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    ap.add_argument("--model", required=True, metavar="BUNDLE", help="bundle directory (local)")
    add_archive_args(ap, rows=3000, shards=4)
    ap.add_argument("--repeats", type=int, default=3, help="rounds; each scores the archive once per candidate")
    ap.add_argument("--bundle-on-s3", action="store_true",
                    help="add a third candidate that also reads the bundle from the S3 endpoint")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: every core)")
    ap.add_argument("--variant", default=None, help="bundle variant (default: the one `score` picks)")
    ap.add_argument("--checkpoint-rows", type=int, default=None,
                    help="rows per committed part (default: docscore's); small values mean more staged uploads")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated archive")
    ap.add_argument("--out", default=None, help="write the JSON here instead of stdout")
    args = ap.parse_args(argv)

    from docscore.batch import ScoreOptions, score_files
    from docscore.bench.archive import make_archive

    with tempfile.TemporaryDirectory(prefix="dss3bench-") as tmp, LocalS3() as s3:
        tmp = Path(tmp)
        os.environ["DOCSCORE_CACHE"] = str(tmp / "cache")  # a fresh bundle cache: filled by the warm-up
        make_archive(tmp / "in", args.rows, kind=args.kind, shards=args.shards, seed=args.seed,
                     row_group_size=args.row_group_size)
        (tmp / "one").mkdir()
        pq.write_table(pq.read_table(tmp / "in" / "part-0000.parquet").slice(0, 1), tmp / "one" / "one.parquet")
        bucket = s3.bucket("dsbench")
        t = time.perf_counter()
        src = s3.upload(tmp / "in", bucket, "archive")
        upload_s = time.perf_counter() - t
        one = s3.upload(tmp / "one", bucket, "one")
        s3_bundle = s3.upload(Path(args.model), bucket, "models/bundle") if args.bundle_on_s3 else None

        kw = {"id_column": "doc_id", "variant": args.variant, "threads": args.threads, "s3_endpoint": s3.endpoint}
        if args.checkpoint_rows:
            kw["checkpoint_rows"] = args.checkpoint_rows
        opts = ScoreOptions(**kw)
        candidates = {  # name: (inputs, bundle, output of round r, read its outputs back)
            "local": (str(tmp / "in"), args.model, lambda r: str(tmp / f"local-{r}"),
                      lambda r: local_tree(tmp / f"local-{r}")),
            "s3": (src, args.model, lambda r: f"s3://{bucket}/out-s3-{r}",
                   lambda r: s3.tree(bucket, f"out-s3-{r}")),
        }
        if s3_bundle:
            candidates["s3-bundle-s3"] = (src, s3_bundle, lambda r: f"s3://{bucket}/out-s3b-{r}",
                                          lambda r: s3.tree(bucket, f"out-s3b-{r}"))

        for name, (_, bundle, _, _) in candidates.items():  # the shared warm-up, untimed
            inp = str(tmp / "one") if name == "local" else one
            out = str(tmp / "warm-local") if name == "local" else f"s3://{bucket}/warm-{name}"
            score_files([inp], bundle, out, opts)

        runs: dict[str, list[dict]] = {name: [] for name in candidates}
        reference = None  # the outputs of the first local run
        differences = []
        names = list(candidates)
        for r in range(args.repeats):
            for name in (names if r % 2 == 0 else names[::-1]):
                inputs, bundle, out_of, read_back = candidates[name]
                cpu0 = s3.cpu_s()
                t = time.perf_counter()
                summary = score_files([inputs], bundle, out_of(r), opts)
                wall = time.perf_counter() - t
                server_cpu = s3.cpu_s() - cpu0
                got = outputs(read_back(r))
                if reference is None and name == "local":
                    reference = got
                runs[name].append({"round": r, "wall_s": round(wall, 3), "docs_per_s": round(summary.rows / wall, 2),
                                   "rows": summary.rows, "ok": summary.ok, "server_cpu_s": round(server_cpu, 2),
                                   "_outputs": got})
                print(f"round {r} {name:>13}: {summary.rows / wall:7.1f} docs/s ({wall:.1f} s, moto server "
                      f"{server_cpu:.1f} CPU s)", file=sys.stderr)
        for name, rs in runs.items():
            for run in rs:
                got = run.pop("_outputs")
                if got != reference:
                    differences.append({"candidate": name, "round": run["round"],
                                        "missing": sorted(set(reference) - set(got)),
                                        "extra": sorted(set(got) - set(reference)),
                                        "differ": sorted(k for k in set(got) & set(reference)
                                                         if got[k] != reference[k])})
        variant = summary.variant
        rows = summary.rows

    from docscore.bench.machine import machine_info

    def med(name, key):
        return round(statistics.median(run[key] for run in runs[name]), 3)

    result = {
        "benchmark": "s3_vs_local", "model": args.model, "variant": variant, "rows": rows, "kind": args.kind,
        "shards": args.shards, "row_group_size": args.row_group_size, "repeats": args.repeats,
        "options": {"threads": args.threads, "checkpoint_rows": opts.checkpoint_rows,
                    "token_budget": opts.token_budget, "sort_window": opts.sort_window},
        "archive_upload_s": round(upload_s, 2),
        "candidates": {name: {"median_docs_per_s": med(name, "docs_per_s"), "median_wall_s": med(name, "wall_s"),
                              "median_server_cpu_s": med(name, "server_cpu_s"), "runs": rs}
                       for name, rs in runs.items()},
        "identical": not differences and all(run["ok"] for rs in runs.values() for run in rs),
        "differences": differences,
        "machine": machine_info(),
    }
    for name in candidates:
        if name != "local":
            ratios = [b["docs_per_s"] / a["docs_per_s"] for a, b in zip(runs["local"], runs[name])]
            result[f"{name.replace('-', '_')}_over_local_docs_per_s"] = round(statistics.median(ratios), 3)
    emit_json(result, args.out)
    ratio = result["s3_over_local_docs_per_s"]
    print(f"{rows} {args.kind} rows, {args.repeats} round(s): local {med('local', 'docs_per_s')} docs/s, s3 "
          f"{med('s3', 'docs_per_s')} docs/s (s3/local {ratio:.3f}, median of rounds); outputs byte-identical: "
          f"{'yes' if result['identical'] else 'NO'}", file=sys.stderr)
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
