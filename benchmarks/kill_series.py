"""A series of SIGKILLs at random times into `docscore score` runs, each rerun to completion and compared byte for
byte with one uninterrupted run: on a local disk or on object storage (a local moto S3 endpoint this script
starts on 127.0.0.1).

    python benchmarks/kill_series.py --model BUNDLE --store local|s3 [--kills 20] [--seed 0] [--rows 600]
                                     [--checkpoint-rows 25] [--out result.json]

What it does: generates an archive of real documentation text (``docscore.bench.archive``; with ``--store s3``
uploaded to a bucket on the local endpoint), then

1. the reference: one uninterrupted ``docscore score`` CLI run (a subprocess, as a scheduler starts it) into its
   own output; its wall time is the run's expected duration;
2. ``--kills`` trials, each into a fresh output: start the same command, SIGKILL it after a seeded random time,
   then run the same command again to completion. The kill times are spread over the reference's duration
   (trial i draws uniformly from the i-th of ``--kills`` equal slices of it), so start-up, model load, parts in
   progress, committed parts, publishing outputs and the manifest all get hit. Small ``--checkpoint-rows``
   make kills land between committed parts of a shard.

Checked after every rerun: its exit code is 0; every output file (``OUT/**/*.parquet`` outside ``_`` folders)
is byte-identical to the reference's and no output is missing; the rows add up to the reference's with no
``doc_id`` twice; ``_SUCCESS`` is there; nothing outside ``OUT/_docscore/`` that the reference does not have
(stray objects); what is left under ``_docscore/`` is reported (should be nothing: the lock is released and the
staging cleared). With ``--store s3``: the local files the killed run was writing
(``$TMPDIR/docscore-staging-<pid>-*``) are gone after the rerun, and so are the rerun's own. At kill time,
recorded: the outputs already published (and whether each is the reference's bytes: a reader must never see a
partial output), the committed parts in staging, the journal events, whether the lock was held.

Prints JSON (stdout, or ``--out``): the reference run, one record per trial (kill time, what existed, rerun exit
code and time, identical yes/no, problems) and totals. A line per trial and a total go to stderr. Exit 0 when
every trial is identical and clean, 1 otherwise.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import HelpFormatter as _Help, emit_json, LocalS3, local_tree, outputs  # noqa: E402

KEEP = {"_docscore_run.json", "_docscore_summary.json", "_SUCCESS", "_docscore_journal.jsonl"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    ap.add_argument("--model", required=True, metavar="BUNDLE", help="bundle directory (local)")
    ap.add_argument("--store", default="local", choices=["local", "s3"],
                    help="where inputs and outputs live: the local disk or the local S3 endpoint")
    ap.add_argument("--kills", type=int, default=20, help="trials: one SIGKILL each, then a rerun")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times (and of the archive)")
    ap.add_argument("--rows", type=int, default=600, help="documents in the generated archive")
    ap.add_argument("--kind", default="mixed", choices=["mixed", "long"],
                    help="mixed: mostly short snippets with some long documents; long: whole documentation files")
    ap.add_argument("--shards", type=int, default=3, help="input files")
    ap.add_argument("--row-group-size", type=int, default=1000, help="rows per row group of the input files")
    ap.add_argument("--checkpoint-rows", type=int, default=25,
                    help="rows per committed part: small, so that kills land between parts of a shard")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: every core)")
    ap.add_argument("--variant", default=None,
                    help="bundle variant; default: the one `score` picks, resolved once here and passed to every run "
                    "(so no run spends time choosing)")
    ap.add_argument("--run-timeout", type=float, default=600, help="seconds a single run may take")
    ap.add_argument("--out", default=None, help="write the JSON here instead of stdout")
    args = ap.parse_args(argv)

    import docscore
    from docscore.bench.archive import make_archive

    variant = args.variant or _default_variant(args.model, args.threads)
    rng = random.Random(args.seed)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(docscore.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)}
    trials = []
    with tempfile.TemporaryDirectory(prefix="dskill-") as tmp, \
            (LocalS3() if args.store == "s3" else _NoS3()) as s3:
        tmp = Path(tmp)
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})  # the fake credentials
        env["DOCSCORE_CACHE"] = str(tmp / "cache")
        make_archive(tmp / "in", args.rows, kind=args.kind, shards=args.shards, seed=args.seed,
                     row_group_size=args.row_group_size)
        store = _Store(args.store, tmp, s3)
        inputs = store.put_archive(tmp / "in")

        def command(out: str) -> list[str]:
            cmd = [sys.executable, "-m", "docscore", "score", inputs, "--model", args.model, "--output", out,
                   "--id-column", "doc_id", "--checkpoint-rows", str(args.checkpoint_rows), "--variant", variant,
                   "--no-progress"]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if s3 is not None:
                cmd += ["--s3-endpoint", s3.endpoint]
            return cmd

        ref_out = store.out("ref")
        t = time.perf_counter()
        ref = subprocess.run(command(ref_out), env=env, capture_output=True, text=True, timeout=args.run_timeout)
        ref_wall = time.perf_counter() - t
        if ref.returncode != 0:
            raise SystemExit(f"the reference run failed (exit {ref.returncode}):\n{ref.stderr[-3000:]}")
        ref_tree = store.tree("ref")
        ref_outputs = outputs(ref_tree)
        ref_rows, ref_ids = _rows(ref_outputs)
        print(f"reference: {ref_rows} rows, {len(ref_outputs)} outputs, {ref_wall:.1f} s ({store.name})",
              file=sys.stderr)

        for i in range(args.kills):
            name = f"k{i:03d}"
            out = store.out(name)
            kill_at = (i + rng.random()) / args.kills * ref_wall
            proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                first_rc = proc.wait(timeout=kill_at)  # finished before its kill time
                killed = False
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                first_rc = proc.wait()
                killed = True
            at_kill = _snapshot(store.tree(name), ref_outputs)
            t = time.perf_counter()
            rerun = _run(command(out), env, args.run_timeout)
            rerun_s = time.perf_counter() - t
            tree = store.tree(name)
            got = outputs(tree)
            rows, ids = _rows(got)
            problems = []
            if rerun.returncode != 0:
                problems.append(f"rerun exit {rerun.returncode}: {rerun.stderr.strip().splitlines()[-1:]}")
            missing = sorted(set(ref_outputs) - set(got))
            differ = sorted(k for k in set(got) & set(ref_outputs) if got[k] != ref_outputs[k])
            if missing:
                problems.append(f"missing outputs: {missing}")
            if differ:
                problems.append(f"outputs differ from the reference: {differ}")
            if rows != ref_rows:
                problems.append(f"{rows} rows, the reference has {ref_rows}")
            if len(ids) != len(set(ids)):
                problems.append(f"{len(ids) - len(set(ids))} duplicate doc_id(s)")
            stray = sorted(k for k in tree if k not in ref_tree and k not in KEEP and not k.startswith("_docscore/"))
            if stray:
                problems.append(f"stray files outside _docscore/: {stray}")
            left = sorted(k for k in tree if k.startswith("_docscore/"))
            if left:
                problems.append(f"left under _docscore/: {left}")
            if "_SUCCESS" not in tree:
                problems.append("no _SUCCESS")
            if at_kill["torn_outputs"]:
                problems.append(f"outputs visible at kill time that are not the reference's: "
                                f"{at_kill['torn_outputs']}")
            for who, pid in (("killed", proc.pid), ("rerun", rerun.pid)):
                local_left = [str(p) for p in Path(tempfile.gettempdir()).glob(f"docscore-staging-{pid}-*")]
                if local_left:
                    problems.append(f"the {who} run's local files being written are still there: {local_left}")
            trial = {"trial": i, "kill_at_s": round(kill_at, 2), "killed": killed,
                     "first_exit": first_rc, "at_kill": at_kill,
                     "rerun_exit": rerun.returncode, "rerun_s": round(rerun_s, 2), "rows": rows,
                     "identical": not (missing or differ) and rows == ref_rows, "problems": problems}
            trials.append(trial)
            done = at_kill["outputs_published"]
            print(f"trial {i:3d}: {'killed' if killed else 'ended '} at {kill_at:5.1f} s ({len(done)}/"
                  f"{len(ref_outputs)} outputs, {at_kill['staged_parts']} staged parts, {at_kill['journal_events']} "
                  f"journal events, lock {'held' if at_kill['lock'] else 'free'}) → rerun exit {rerun.returncode} "
                  f"in {rerun_s:.1f} s, {'identical' if trial['identical'] else 'DIFFERENT'}"
                  f"{'; ' + '; '.join(problems) if problems else ''}", file=sys.stderr)
            store.remove(name)

    from docscore.bench.machine import machine_info

    good = [t for t in trials if t["identical"] and not t["problems"]]
    result = {
        "benchmark": "kill_series", "store": args.store, "model": args.model, "variant": variant,
        "rows": ref_rows, "kind": args.kind, "shards": args.shards, "checkpoint_rows": args.checkpoint_rows,
        "threads": args.threads, "seed": args.seed,
        "reference": {"wall_s": round(ref_wall, 2), "rows": ref_rows, "outputs": len(ref_outputs)},
        "trials": trials,
        "total": {"trials": len(trials), "killed": sum(t["killed"] for t in trials),
                  "identical": sum(t["identical"] for t in trials), "clean": len(good),
                  "rerun_exit_nonzero": sum(t["rerun_exit"] != 0 for t in trials),
                  "killed_with_outputs_published": sum(bool(t["at_kill"]["outputs_published"]) and t["killed"]
                                                       for t in trials),
                  "killed_with_staged_parts": sum(t["at_kill"]["staged_parts"] > 0 and t["killed"] for t in trials)},
        "all_identical_and_clean": len(good) == len(trials),
        "machine": machine_info(),
    }
    emit_json(result, args.out)
    tot = result["total"]
    print(f"{args.store}: {tot['identical']}/{tot['trials']} trials byte-identical to the reference "
          f"({tot['killed']} killed mid-run, {tot['killed_with_staged_parts']} with committed parts staged, "
          f"{tot['killed_with_outputs_published']} with outputs already published), {tot['clean']} clean, "
          f"{tot['rerun_exit_nonzero']} reruns with a nonzero exit", file=sys.stderr)
    return 0 if result["all_identical_and_clean"] else 1


def _run(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run`` that also tells the child's pid (``.pid``): its local temporary files are named by it."""
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    done.pid = proc.pid
    return done


def _default_variant(model: str, threads: int | None) -> str:
    from docscore.runtime.choose import choose_variant
    from docscore.bundle import load_bundle

    return choose_variant(load_bundle(model), "cpu", threads)


def _rows(outs: dict[str, bytes]) -> tuple[int, list]:
    ids: list = []
    for data in outs.values():
        ids.extend(pq.read_table(io.BytesIO(data), columns=["doc_id"]).column("doc_id").to_pylist())
    return len(ids), ids


def _snapshot(tree: dict[str, bytes], ref_outputs: dict[str, bytes]) -> dict:
    """What a killed run left: outputs published (and any that are not the reference's bytes), committed parts,
    journal events, the lock."""
    published = outputs(tree)
    journal = sum(1 for k in tree if k.startswith("_docscore/journal/"))
    if "_docscore_journal.jsonl" in tree:
        journal += sum(1 for line in tree["_docscore_journal.jsonl"].splitlines() if line.strip())
    return {"outputs_published": sorted(published),
            "torn_outputs": sorted(k for k, v in published.items() if ref_outputs.get(k) != v),
            "staged_parts": sum(1 for k in tree if k.startswith("_docscore/staging/") and k.endswith(".staged")),
            "journal_events": journal, "lock": "_docscore/lock.json" in tree,
            "manifest": "_docscore_run.json" in tree, "success": "_SUCCESS" in tree}


class _NoS3:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


class _Store:
    """Outputs of the reference and of each trial: folders of a local directory, or prefixes of a bucket."""

    def __init__(self, name: str, tmp: Path, s3: LocalS3 | None):
        self.name, self.tmp, self.s3 = name, tmp, s3
        self.bucket = s3.bucket("dskill") if s3 else None

    def put_archive(self, local: Path) -> str:
        return self.s3.upload(local, self.bucket, "archive") if self.s3 else str(local)

    def out(self, name: str) -> str:
        return f"s3://{self.bucket}/out-{name}" if self.s3 else str(self.tmp / f"out-{name}")

    def tree(self, name: str) -> dict[str, bytes]:
        if self.s3:
            return self.s3.tree(self.bucket, f"out-{name}")
        root = self.tmp / f"out-{name}"
        return local_tree(root) if root.exists() else {}

    def remove(self, name: str) -> None:
        if self.s3:
            keys = self.s3.keys(self.bucket, f"out-{name}/")
            for start in range(0, len(keys), 1000):
                self.s3.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[start:start + 1000]]})
        else:
            shutil.rmtree(self.tmp / f"out-{name}", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
