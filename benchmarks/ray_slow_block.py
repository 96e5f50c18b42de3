"""One slow piece in a `--engine ray` run: the driver's memory and the run's time, with and without it, on a local
Ray instance; the bound on pieces held ahead of the slow one; the outputs against a local run.

    python benchmarks/ray_slow_block.py --model BUNDLE [--rows 3000] [--kind mixed] [--slow-seconds 20]
                                        [--num-cpus 2] [--max-blocks-ahead N] [--batch-rows N] [--out result.json]

What it does: generates an archive of real documentation text (``docscore.bench.archive``) and scores it three
times, each in a process of its own (so each peak RSS, ``VmHWM``, is that run's own):

1. ``local``: ``score_files`` on this machine (the reference outputs);
2. ``ray``: ``score_files_ray`` on a private local Ray instance (``--num-cpus`` CPUs, session files in a short
   temporary directory), as ``docscore score --engine ray`` runs it;
3. ``ray-slow``: the same, with one piece made slow: the actor failpoint ``slow:<seconds>:<marker>``
   (``DOCSCORE_RAY_FAILPOINT``) sleeps ``--slow-seconds`` in the first actor call that reaches it (an actor's
   second call), once per run.

While the slow piece holds the oldest slot of the reorder window, the other actors score the pieces after it, up
to ``RayOptions.max_blocks_ahead`` pieces sent and not yet committed; then the driver sends nothing more
(backpressure) until the slow piece is back. So the driver's peak RSS should not grow with the delay, and the
run should take about ``--slow-seconds`` longer minus the work done ahead. The engine's counters come from the
run summary (``engine_stats``): the window bound, the most pieces outstanding at once, the most finished pieces
held behind an unfinished older one (``peak_ahead``, at most the bound minus one), and the pieces sent.

Timed per Ray run: ``ray.init`` of the private instance, the ``score_files_ray`` call (actor start-up and model
loads included) and ``ray.shutdown``, together (``wall_s``) and apart.

Prints JSON (stdout, or ``--out``): per run wall time, docs/s, driver peak RSS (MiB) and the engine counters; the
differences slow − normal; whether the slow piece fired; whether both Ray runs' outputs are byte-identical to the
local run's. A short summary goes to stderr. Exit 0 when the outputs are identical and the slow piece fired, 1
otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import HelpFormatter as _Help, add_archive_args, emit_json, local_tree, outputs  # noqa: E402

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
job = json.loads(sys.argv[1])
from docscore.batch import ScoreOptions, score_files
opts = ScoreOptions(**job["options"])

def peak_rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0

out = {}
if job["engine"] == "local":
    t = time.perf_counter()
    s = score_files([job["inputs"]], job["model"], job["output"], opts)
    out["wall_s"] = time.perf_counter() - t
else:
    import shutil
    from docscore.batch.ray import RayOptions, ray_connection, score_files_ray
    ray_tmp = tempfile.mkdtemp(prefix="dsray-")  # short: Ray puts Unix sockets below it
    ropts = RayOptions(num_cpus=job["num_cpus"], tmp_dir=ray_tmp, workers=job["workers"],
                       batch_rows=job["batch_rows"], max_blocks_ahead=job["max_blocks_ahead"])
    t0 = time.perf_counter()
    conn = ray_connection(ropts)
    conn.__enter__()
    out["ray_init_s"] = time.perf_counter() - t0
    try:
        t = time.perf_counter()
        s = score_files_ray([job["inputs"]], job["model"], job["output"], opts, ropts)
        out["score_call_s"] = time.perf_counter() - t
    finally:
        t = time.perf_counter()
        conn.__exit__(None, None, None)
        out["shutdown_s"] = time.perf_counter() - t
        shutil.rmtree(ray_tmp, ignore_errors=True)
    out["wall_s"] = time.perf_counter() - t0
    out["engine_stats"] = s.engine_stats
out.update(rows=s.rows, ok=s.ok, variant=s.variant, peak_rss_mib=peak_rss_mib())
print("RESULT " + json.dumps(out))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    ap.add_argument("--model", required=True, metavar="BUNDLE", help="bundle directory (local)")
    add_archive_args(ap, rows=3000, shards=2)
    ap.add_argument("--slow-seconds", type=float, default=20.0, help="how long the slow piece sleeps")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--workers", type=int, default=None, help="scoring actors (default: the engine's)")
    ap.add_argument("--batch-rows", type=int, default=None, help="rows per piece (default: the engine's, 256)")
    ap.add_argument("--max-blocks-ahead", type=int, default=None,
                    help="RayOptions.max_blocks_ahead (default: the engine's, 4 per concurrent actor call)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads of the local run")
    ap.add_argument("--variant", default=None,
                    help="bundle variant (default: the one `score` picks, resolved once here for every run)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a single run may take")
    ap.add_argument("--out", default=None, help="write the JSON here instead of stdout")
    args = ap.parse_args(argv)

    import docscore
    from docscore.bench.archive import make_archive

    variant = args.variant or _default_variant(args.model, args.threads)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(docscore.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)}
    env.pop("DOCSCORE_RAY_FAILPOINT", None)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="dsslow-") as tmp:
        tmp = Path(tmp)
        make_archive(tmp / "in", args.rows, kind=args.kind, shards=args.shards, row_group_size=args.row_group_size)
        marker = tmp / "slowed"
        base = {"inputs": str(tmp / "in"), "model": args.model, "num_cpus": args.num_cpus, "workers": args.workers,
                "batch_rows": args.batch_rows, "max_blocks_ahead": args.max_blocks_ahead,
                "options": {"id_column": "doc_id", "variant": variant}}
        plan = [("local", "local", {**base["options"], "threads": args.threads}, {}),
                ("ray", "ray", base["options"], {}),
                ("ray-slow", "ray", base["options"],
                 {"DOCSCORE_RAY_FAILPOINT": f"slow:{args.slow_seconds:g}:{marker}"})]
        trees = {}
        for name, engine, options, extra_env in plan:
            job = {**base, "engine": engine, "options": options, "output": str(tmp / f"out-{name}")}
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], env={**env, **extra_env},
                                  capture_output=True, text=True, timeout=args.timeout)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"the {name} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            r = json.loads(line[len("RESULT "):])
            r = {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}
            r["docs_per_s"] = round(r["rows"] / r["wall_s"], 1)
            runs[name] = r
            trees[name] = outputs(local_tree(tmp / f"out-{name}"))
            stats = r.get("engine_stats") or {}
            print(f"{name:>8}: {r['wall_s']:6.1f} s, {r['docs_per_s']:6.1f} docs/s, driver peak RSS "
                  f"{r['peak_rss_mib']:.0f} MiB" + (f", window {stats.get('max_blocks_ahead')}, peak ahead "
                                                     f"{stats.get('peak_ahead')}, peak outstanding "
                                                     f"{stats.get('peak_outstanding')}, {stats.get('pieces')} pieces"
                                                     if stats else ""), file=sys.stderr)
        slow_fired = marker.exists()

    identical = {name: trees[name] == trees["local"] for name in ("ray", "ray-slow")}
    from docscore.bench.machine import machine_info

    slow, normal = runs["ray-slow"], runs["ray"]
    result = {
        "benchmark": "ray_slow_block", "model": args.model, "variant": variant, "rows": runs["local"]["rows"],
        "kind": args.kind, "shards": args.shards, "num_cpus": args.num_cpus, "slow_seconds": args.slow_seconds,
        "max_blocks_ahead": (slow.get("engine_stats") or {}).get("max_blocks_ahead"),
        "runs": runs,
        "slow_minus_normal": {"wall_s": round(slow["wall_s"] - normal["wall_s"], 2),
                              "peak_rss_mib": round(slow["peak_rss_mib"] - normal["peak_rss_mib"], 1)},
        "slow_piece_fired": slow_fired,
        "identical_to_local": identical,
        "machine": machine_info(),
    }
    emit_json(result, args.out)
    st = slow.get("engine_stats") or {}
    print(f"slow piece ({args.slow_seconds:g} s, fired: {'yes' if slow_fired else 'NO'}): wall "
          f"{normal['wall_s']:.1f} → {slow['wall_s']:.1f} s, driver peak RSS {normal['peak_rss_mib']:.0f} → "
          f"{slow['peak_rss_mib']:.0f} MiB; window {st.get('max_blocks_ahead')}, at most {st.get('peak_ahead')} "
          f"piece(s) held ahead; outputs byte-identical to local: ray {'yes' if identical['ray'] else 'NO'}, "
          f"ray-slow {'yes' if identical['ray-slow'] else 'NO'}", file=sys.stderr)
    return 0 if slow_fired and all(identical.values()) else 1


def _default_variant(model: str, threads: int | None) -> str:
    from docscore.runtime.choose import choose_variant
    from docscore.bundle import load_bundle

    return choose_variant(load_bundle(model), "cpu", threads)


if __name__ == "__main__":
    sys.exit(main())
