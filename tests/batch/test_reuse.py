"""Score reuse: a night costs what changed. Every output must be byte-identical to a run on a fresh --output, and
``inferred_rows`` must be exactly the rows whose text the output never scored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_data import make_table

from docscore.batch import ScoreOptions, score_files
from docscore.batch.reuse import ReuseIndex, RunMemo
from docscore.batch.scorefiles import Keys, is_score_file, text_keys
from docscore.runtime import ov

ROOT = Path(__file__).resolve().parents[2]
BASE = dict(id_column="doc_id", threads=1, sort_window=16, token_budget=512, checkpoint_rows=20)
# every CPU variant docscore ships on this host (bf16 only where the CPU computes bf16 natively)
VARIANTS = ("fp32", "optimized", "int8") + (("bf16",) if ov.native_bf16() else ())


@pytest.fixture(scope="module")
def variants_bundle(tiny_bundle_factory) -> Path:
    return tiny_bundle_factory(variants=("fp32", "optimized", "int8"), bf16="bf16" in VARIANTS)


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.parquet"))
            if not any(part.startswith("_") for part in p.relative_to(out).parts)}


def score_files_left(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in (out / "_docscore" / "reuse").rglob("*") if p.is_file()}


def named_by_manifest(out: Path) -> set[str]:
    shards = json.loads((out / "_docscore_run.json").read_text())["shards"]
    return {e["reuse"] for e in shards.values() if "reuse" in e}


def fresh(src: Path, bundle: Path, out: Path, **options) -> dict[str, bytes]:
    summary = score_files([src], bundle, out, ScoreOptions(**{**BASE, **options}))
    assert summary.reused_rows == 0 or options.get("reuse", True)
    return outputs(out)


def night1(tmp_path: Path) -> tuple[Path, list[pa.Table]]:
    root = tmp_path / "archive"
    root.mkdir()
    tables = [make_table(30, seed=1, start_id=0), make_table(45, seed=2, start_id=100),
              make_table(25, seed=3, start_id=200)]
    for name, t in zip(("a", "b", "c"), tables):
        pq.write_table(t, root / f"{name}.parquet", row_group_size=10)
    return root, tables


def compact(root: Path, tables: list[pa.Table]) -> None:
    """OPTIMIZE: every file merged into two new ones, in another order; the old files deleted."""
    for p in root.glob("*.parquet"):
        p.unlink()
    rows = pa.concat_tables(tables[::-1])
    pq.write_table(rows.slice(0, 60), root / "part-0000.parquet")
    pq.write_table(rows.slice(60), root / "part-0001.parquet", row_group_size=7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_compaction_reuses_every_row_and_writes_a_fresh_runs_bytes(variant, variants_bundle, tmp_path):
    root, tables = night1(tmp_path)
    out = tmp_path / "out"
    s1 = score_files([root], variants_bundle, out, ScoreOptions(variant=variant, **BASE))
    assert (s1.rows, s1.reused_rows, s1.inferred_rows) == (100, 0, 100)
    assert score_files_left(out) == named_by_manifest(out) and len(named_by_manifest(out)) == 3
    compact(root, tables)
    s2 = score_files([root], variants_bundle, out, ScoreOptions(variant=variant, prune=True, **BASE))
    assert (s2.rows, s2.inferred_rows, s2.reused_rows, s2.reuse_index_rows) == (100, 0, 100, 100)
    assert s2.reuse_index_bytes == 100 * 24
    assert outputs(out) == fresh(root, variants_bundle, tmp_path / "fresh", variant=variant)
    # the pruned inputs' score files went with their outputs
    assert score_files_left(out) == named_by_manifest(out) and len(named_by_manifest(out)) == 2


@pytest.mark.parametrize("long_docs", ["truncate", "chunk"])
def test_edits_appends_splits_and_renames_infer_only_the_new_texts(long_docs, bundle, tmp_path):
    root, tables = night1(tmp_path)
    opts = {**BASE, "long_docs": long_docs, "max_chunks": 8}
    out = tmp_path / "out"
    score_files([root], bundle, out, ScoreOptions(**opts))
    a, b, c = tables
    # a: 2 rows edited, 3 appended (same name); b: split into two new files; c: renamed, rows reordered
    texts = a.column("text").to_pylist()
    for i in (3, 17):
        texts[i] = (texts[i] or "") + " xqzvkj edited"
    a2 = pa.concat_tables([a.set_column(a.schema.get_field_index("text"), "text", pa.array(texts)),
                           make_table(3, seed=9, start_id=900)])
    pq.write_table(a2, root / "a.parquet")
    (root / "b.parquet").unlink()
    pq.write_table(b.slice(0, 20), root / "b-1.parquet")
    pq.write_table(b.slice(20), root / "b-2.parquet")
    (root / "c.parquet").unlink()
    pq.write_table(c.take(list(range(c.num_rows))[::-1]), root / "renamed.parquet")
    s = score_files([root], bundle, out, ScoreOptions(prune=True, **opts))
    new_rows = 2 + 3
    assert s.rows == 103 and s.inferred_rows == new_rows and s.reused_rows == 103 - new_rows
    assert outputs(out) == fresh(root, bundle, tmp_path / "fresh", **opts)


def test_duplicates_within_a_run_are_inferred_once_and_change_no_byte(bundle, tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    base = make_table(40, seed=5)
    texts = base.column("text").to_pylist()
    uniques = {t for t in texts if t is not None}
    doubled = pa.concat_tables([base, base.take(list(range(40))[::-1])])  # every text twice, in other windows
    pq.write_table(doubled, root / "x.parquet")
    pq.write_table(base.slice(0, 10), root / "y.parquet")  # and again in another file
    out = tmp_path / "out"
    s = score_files([root], bundle, out, ScoreOptions(**BASE))
    not_keyed = 2 * sum(t is None for t in texts) + sum(t is None for t in texts[:10])  # null texts: computed
    assert s.rows == 90 and s.inferred_rows == len(uniques) + not_keyed and s.reused_rows == 90 - s.inferred_rows
    plain = tmp_path / "plain"
    s0 = score_files([root], bundle, plain, ScoreOptions(reuse=False, **BASE))
    assert s0.reused_rows == 0 and s0.inferred_rows == 90
    assert outputs(out) == outputs(plain)
    assert not (plain / "_docscore" / "reuse").exists()  # --no-reuse keeps no score files


def test_a_full_run_memo_only_stops_deduplicating(bundle, tmp_path, monkeypatch):
    import docscore.batch.reuse as reuse_mod

    monkeypatch.setattr(reuse_mod, "MEMO_ROWS", 3)
    root = tmp_path / "archive"
    root.mkdir()
    base = make_table(20, seed=6)
    pq.write_table(pa.concat_tables([base, base]), root / "x.parquet")
    out = tmp_path / "out"
    s = score_files([root], bundle, out, ScoreOptions(**BASE))
    assert 0 < s.reused_rows <= 3
    assert outputs(out) == fresh(root, bundle, tmp_path / "fresh", reuse=False)


def test_kill_during_a_reusing_night_and_resume_is_byte_identical(bundle, tmp_path):
    root, tables = night1(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "docscore", "score", str(root), "--model", str(bundle), "--output", str(out),
           "--id-column", "doc_id", "--threads", "1", "--checkpoint-rows", "20", "--sort-window", "16",
           "--token-budget", "512", "--no-progress", "--prune"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    assert subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180).returncode == 0
    compact(root, tables)
    for failpoint in ("part_committed:2", "output_committed:1", "shard_done:1"):
        killed = subprocess.run(cmd, cwd=ROOT, env={**env, "DOCSCORE_FAILPOINT": failpoint}, capture_output=True,
                                text=True, timeout=180)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = subprocess.run(cmd + ["--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert outputs(out) == fresh(root, bundle, tmp_path / "fresh")
    assert score_files_left(out) == named_by_manifest(out)
    assert json.loads(done.stdout)["inferred_rows"] == 0  # the old score files outlived the killed nights


def test_another_bundle_never_reuses(bundle, multi_bundle, tmp_path):
    root, _ = night1(tmp_path)
    out = tmp_path / "out"
    score_files([root], bundle, out, ScoreOptions(**BASE))
    s = score_files([root], multi_bundle, out, ScoreOptions(overwrite=True, **BASE))
    assert s.reused_rows == 0 and s.reuse_index_rows == 0 and s.inferred_rows == 100
    assert score_files_left(out) == named_by_manifest(out)
    assert outputs(out) == fresh(root, multi_bundle, tmp_path / "fresh")


def test_a_damaged_or_hostile_score_file_is_never_trusted_blindly(bundle, tmp_path, caplog):
    root, tables = night1(tmp_path)
    out = tmp_path / "out"
    score_files([root], bundle, out, ScoreOptions(**BASE))
    manifest = json.loads((out / "_docscore_run.json").read_text())
    named = sorted(e["reuse"] for e in manifest["shards"].values())
    (out / named[0]).write_bytes(b"PAR1 not parquet")  # a torn or damaged file: not used
    secret = tmp_path / "outside.scores"
    (out / named[1]).rename(secret)  # b's (good) score file, moved out of OUT and named from there
    manifest["shards"]["b.parquet"]["reuse"] = "_docscore/reuse/../../../outside.scores"  # outside OUT: refused
    (out / "_docscore_run.json").write_text(json.dumps(manifest))
    assert not is_score_file("_docscore/reuse/../../../outside.scores") and not is_score_file("/etc/passwd")
    compact(root, tables)
    s = score_files([root], bundle, out, ScoreOptions(prune=True, **BASE))
    assert s.reused_rows == 25  # only c's file (25 rows) was usable
    assert outputs(out) == fresh(root, bundle, tmp_path / "fresh")
    assert secret.exists()  # nothing outside OUT was read as a score file, or removed


def test_reuse_on_s3_equals_a_fresh_local_run(s3, bundle, tmp_path):
    root, tables = night1(tmp_path)
    bucket = s3.bucket()
    uri = f"s3://{bucket}/scores"
    opts = ScoreOptions(s3_endpoint=s3.endpoint, prune=True, **BASE)
    score_files([root], bundle, uri, opts)
    assert len([k for k in s3.keys(bucket, "scores/_docscore/reuse/") if k.endswith(".scores")]) == 3
    compact(root, tables)
    s = score_files([root], bundle, uri, opts)
    assert s.inferred_rows == 0 and s.reused_rows == 100
    expected = fresh(root, bundle, tmp_path / "fresh")
    assert {k[len("scores/"):]: s3.get(bucket, k) for k in s3.keys(bucket, "scores/") if k.endswith(".parquet")} \
        == expected
    assert len([k for k in s3.keys(bucket, "scores/_docscore/reuse/") if k.endswith(".scores")]) == 2


def test_the_cli_reports_inferred_and_reused_rows_and_has_no_reuse(bundle, tmp_path, capsys):
    from docscore.cli import main

    root, tables = night1(tmp_path)
    flags = ["--id-column", "doc_id", "--threads", "1", "--no-progress", "--prune"]
    out = tmp_path / "out"
    assert main(["score", str(root), "--model", str(bundle), "--output", str(out), *flags]) == 0
    compact(root, tables)
    capsys.readouterr()
    assert main(["score", str(root), "--model", str(bundle), "--output", str(out), *flags]) == 0
    assert "0 rows inferred, 100 reused (from 100 cached rows" in capsys.readouterr().out
    assert main(["score", str(root), "--model", str(bundle), "--output", str(out), *flags, "--no-reuse",
                 "--on-change", "rescore", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files_skipped"] == 2 and summary["inferred_rows"] == 0  # unchanged files are skipped anyway


# --- the pieces ---------------------------------------------------------------------------------------------------


def test_text_keys_are_the_texts_bytes_whatever_the_arrow_type():
    import hashlib

    want = hashlib.blake2b("héllo".encode(), digest_size=16).digest()
    for arr in (pa.array(["héllo", None, ""]), pa.array(["héllo", None, ""], pa.large_string()),
                pa.array(["héllo".encode(), None, b""]), pa.array(["héllo", None, ""]).dictionary_encode(),
                pa.chunked_array([["x"], ["héllo", None, ""]]).slice(1)):
        k = text_keys(arr)
        assert k.valid.tolist() == [True, False, True] and k.key_bytes(0) == want, arr.type
    assert not text_keys(pa.array([1, 2])).valid.any()  # other types: not keyed (their rows are errors)


def test_the_index_finds_keys_sharing_their_first_half_and_costs_24_bytes_a_row():
    hi = np.array([5, 5, 5, 9], dtype=np.uint64)
    lo = np.array([3, 1, 2, 0], dtype=np.uint64)
    index = ReuseIndex(hi, lo, np.zeros(4, np.uint32), np.arange(4, dtype=np.uint32))
    q = Keys(np.array([5, 5, 9, 9, 1], dtype=np.uint64), np.array([2, 7, 0, 1, 0], dtype=np.uint64),
             np.array([True, True, True, True, True]))
    found = index.lookup(q)
    assert index.row[found[0]] == 2 and found[1] == -1 and index.row[found[2]] == 3 and found[3] == found[4] == -1
    assert index.nbytes == 4 * 24


def test_the_run_memo_copies_in_the_order_asked():
    memo = RunMemo(cap=10)
    memo.keep([b"a" * 16, b"b" * 16], pa.table({"score": [1.0, 2.0]}))
    memo.keep([b"c" * 16], pa.table({"score": [3.0]}))
    got = memo.copy([b"c" * 16, b"a" * 16, b"b" * 16, b"c" * 16], pa.schema([("score", pa.float64())]))
    assert got.column("score").to_pylist() == [3.0, 1.0, 2.0, 3.0]


def test_reuse_with_the_ray_engine_across_engines(bundle, tmp_path):
    """Night 1 on Ray writes the score files the local engine writes; night 2 on Ray (actors share the driver's
    index) infers nothing after a compaction; both equal a fresh local run, byte for byte."""
    pytest.importorskip("ray")
    import tempfile

    from docscore.batch.ray import RayOptions, ray_connection, score_files_ray

    root, tables = night1(tmp_path)
    out, local = tmp_path / "ray", tmp_path / "local"
    score_files([root], bundle, local, ScoreOptions(**BASE))
    with ray_connection(RayOptions(num_cpus=2, tmp_dir=tempfile.mkdtemp(prefix="dsray-"))):
        s1 = score_files_ray([root], bundle, out, ScoreOptions(**BASE), workers=1)
        assert s1.inferred_rows == 100 and len(score_files_left(out)) == 3
        compact(root, tables)
        s2 = score_files_ray([root], bundle, out, ScoreOptions(prune=True, **BASE), workers=1)
    assert (s2.inferred_rows, s2.reused_rows) == (0, 100)
    assert outputs(out) == fresh(root, bundle, tmp_path / "fresh")
    assert score_files_left(out) == named_by_manifest(out)


def test_a_night_that_infers_nothing_leaves_no_model_compiling(variants_bundle, tmp_path, monkeypatch):
    """Every row reused: the OpenVINO model compiling in the background was never needed, and the run still waits
    for it before returning (a compile thread left running at interpreter exit aborted the process after a
    finished night: 'terminate called without an active exception', exit 134)."""
    import threading
    import time

    from docscore.runtime import ov as ov_mod

    root, tables = night1(tmp_path)
    opts = ScoreOptions(variant="int8", prune=True, **BASE)
    score_files([root], variants_bundle, tmp_path / "out", opts)
    compact(root, tables)
    compile_ = ov_mod.OpenVINOEngine._compile
    monkeypatch.setattr(ov_mod.OpenVINOEngine, "_compile", lambda self, *a: (time.sleep(1.5), compile_(self, *a)))
    s = score_files([root], variants_bundle, tmp_path / "out", opts)
    assert s.inferred_rows == 0
    assert not [t for t in threading.enumerate() if t.name == "docscore-compile"]
