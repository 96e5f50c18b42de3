"""A living archive scored every night with ``docscore score``: one writer, changed / deleted inputs, data-lake
conventions, health in the exit code. Every run is the real CLI on a tiny bundle; row counts are what readers see."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from batch_data import make_hive_archive, make_table

from docscore.batch import Scorer, ScoreOptions, score_files
from docscore.cli import main

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--id-column", "doc_id", "--threads", "1", "--sort-window", "16", "--token-budget", "512", "--no-progress"]


def score(capsys, src, bundle, out, *extra) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["score", str(src), "--model", str(bundle), "--output", str(out), *FLAGS, "--json", *extra])
    captured = capsys.readouterr()
    return rc, (json.loads(captured.out) if captured.out.strip().startswith("{") else {"stderr": captured.err})


def cmd(src, bundle, out, *extra) -> list[str]:
    return [sys.executable, "-m", "docscore", "score", str(src), "--model", str(bundle), "--output", str(out),
            *FLAGS, *extra]


def env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", **extra}


def glob_rows(out: Path) -> int:
    """Rows under ``OUT/**/*.parquet``, as polars and DuckDB count them (they descend into ``_`` folders)."""
    paths = list(out.rglob("*.parquet"))
    assert all(p.is_file() for p in paths), paths
    return sum(pq.read_metadata(p).num_rows for p in paths)


def reader_rows(out: Path) -> dict[str, int]:
    """What each documented reader counts on OUT."""
    rows = {"glob": glob_rows(out), "pyarrow.dataset": ds.dataset(out, format="parquet").count_rows()}
    import duckdb  # in the dev extra: the README's reader claims are checked, never silently dropped
    import polars as pl

    rows["polars"] = pl.scan_parquet(str(out / "**/*.parquet")).select(pl.len()).collect().item()
    rows["duckdb"] = duckdb.sql(f"select count(*) from read_parquet('{out}/**/*.parquet')").fetchall()[0][0]
    return rows


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file a reader's glob sees (docscore's own ``_``-prefixed files left out), as bytes."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.parquet"))
            if not any(part.startswith("_") for part in p.relative_to(out).parts)}


def fresh(src: Path, bundle: Path, tmp_path: Path, **options) -> dict[str, bytes]:
    """The outputs of one uninterrupted run of today's archive on a new output: what every night must equal (the
    same ``--checkpoint-rows``: row groups are cut within each part)."""
    out = tmp_path / f"fresh-{len(list(tmp_path.glob('fresh-*')))}"
    score_files([src], bundle, out, ScoreOptions(id_column="doc_id", threads=1, sort_window=16, token_budget=512,
                                                 **options))
    return outputs(out)


def assert_clean(out: Path) -> None:
    """Nothing but outputs and docscore's own _-prefixed files; no lock or staging once a run is over."""
    assert not (out / "_docscore" / "lock.json").exists() and not (out / "_docscore" / "staging").exists()
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.inprogress")) and not (out / "_parts").exists()


@pytest.fixture
def night1(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    pq.write_table(make_table(30, seed=1, start_id=0), root / "a.parquet")
    pq.write_table(make_table(20, seed=2, start_id=100), root / "b.parquet")
    pq.write_table(make_table(25, seed=3, start_id=200), root / "c.parquet")
    return root


# --- one writer ------------------------------------------------------------------------------------------------


def test_two_concurrent_runs_one_refused_output_correct(night1, bundle, tmp_path):
    out, release = tmp_path / "out", tmp_path / "release"
    first = subprocess.Popen(cmd(night1, bundle, out, "--checkpoint-rows", "10"), cwd=ROOT, text=True,
                             env=env(DOCSCORE_FAILPOINT=f"part_committed:1:wait={release}"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((out / "_docscore").rglob("part-00000.staged")) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = subprocess.run(cmd(night1, bundle, out), cwd=ROOT, env=env(), capture_output=True, text=True,
                            timeout=120)
    release.touch()
    assert first.wait(timeout=120) == 0, first.communicate()
    assert second.returncode == 6
    assert f"another docscore run is writing {out} (pid {first.pid} on " in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert set(reader_rows(out).values()) == {75}
    assert outputs(out) == fresh(night1, bundle, tmp_path, checkpoint_rows=10)
    assert_clean(out)


def test_killed_runs_leftovers_are_removed_by_the_next_run(night1, bundle, tmp_path):
    out = tmp_path / "out"
    killed = subprocess.run(cmd(night1, bundle, out, "--checkpoint-rows", "10"), cwd=ROOT, capture_output=True,
                            env=env(DOCSCORE_FAILPOINT="part_committed:4"), timeout=120)
    assert killed.returncode == -9
    assert (out / "_docscore" / "lock.json").exists()  # its pid is dead: stale
    (out / "_parts" / "b.parquet").mkdir(parents=True)  # leftovers of docscore before the _docscore layout
    pq.write_table(make_table(5), out / "_parts" / "b.parquet" / "part-00000.parquet")
    pq.write_table(make_table(5), out / "c.parquet.tmp")
    rerun = subprocess.run(cmd(night1, bundle, out, "--checkpoint-rows", "10"), cwd=ROOT, env=env(),
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert set(reader_rows(out).values()) == {75}
    assert outputs(out) == fresh(night1, bundle, tmp_path, checkpoint_rows=10)
    assert_clean(out)


# --- inputs that change between nights --------------------------------------------------------------------------


@pytest.mark.parametrize("on_change,prune", [("rescore", True), ("refuse", True), ("keep", True),
                                             ("rescore", False)])
def test_new_changed_and_deleted_files_in_one_night(on_change, prune, night1, bundle, tmp_path, capsys):
    out = tmp_path / "out"
    assert score(capsys, night1, bundle, out)[0] == 0
    before = outputs(out)
    pq.write_table(make_table(31, seed=9, start_id=0), night1 / "a.parquet")  # rewritten upstream
    pq.write_table(make_table(12, seed=4, start_id=300), night1 / "d.parquet")  # new
    (night1 / "c.parquet").unlink()  # deleted
    rc, s = score(capsys, night1, bundle, out, "--on-change", on_change, *(["--prune"] if prune else []))

    healthy = on_change != "refuse" and prune
    assert rc == (0 if healthy else 1) and s["ok"] is healthy and (out / "_SUCCESS").exists() is healthy
    assert s["scored"] == (["a.parquet", "d.parquet"] if on_change == "rescore" else ["d.parquet"])
    assert s["skipped"] == ["b.parquet"]
    assert [(c["output"], c["action"]) for c in s["changed"]] == [
        ("a.parquet", {"rescore": "rescored", "refuse": "refused", "keep": "kept"}[on_change])]
    assert [(d["output"], d["action"]) for d in s["deleted"]] == [("c.parquet", "pruned" if prune else "kept")]
    a_rows = 31 if on_change == "rescore" else 30
    c_rows = 0 if prune else 25
    assert set(reader_rows(out).values()) == {a_rows + 20 + c_rows + 12}
    assert (out / "c.parquet").exists() is not prune
    # values, not counts: what readers see equals a fresh run of tonight's archive, except the outputs the policy
    # keeps, which are last night's bytes
    now, today = outputs(out), fresh(night1, bundle, tmp_path)
    assert now["a.parquet"] == (today["a.parquet"] if on_change == "rescore" else before["a.parquet"])
    assert now["a.parquet"] != before["a.parquet"] or on_change != "rescore"
    assert now["b.parquet"] == today["b.parquet"] == before["b.parquet"] and now["d.parquet"] == today["d.parquet"]
    assert ("c.parquet" in now) is not prune and now.get("c.parquet", before["c.parquet"]) == before["c.parquet"]
    assert_clean(out)
    # docscore report lists the same decisions
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0
    last = json.loads(capsys.readouterr().out)["last_run"]
    assert last["changed"] == s["changed"] and last["deleted"] == s["deleted"]
    assert last["success_marker"] is healthy


def test_same_size_edit_is_rescored_and_a_touch_is_not(bundle, tmp_path, capsys):
    src = tmp_path / "archive"
    src.mkdir()
    path = src / "a.parquet"
    table = make_table(40, seed=6)
    texts = table.column("text").to_pylist()
    table = table.set_column(1, "text", pa.array(["refund for order 42, please", *texts[1:]]))  # within max_length
    pq.write_table(table, path, compression="none", write_statistics=False)
    out = tmp_path / "out"
    assert score(capsys, src, bundle, out)[0] == 0
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rc, s = score(capsys, src, bundle, out)
    assert rc == 0 and s["skipped"] == ["a.parquet"] and not s["changed"]
    before = outputs(out)["a.parquet"]
    data = bytearray(path.read_bytes())
    i = data.index(b"refund")
    data[i:i + 6] = b"xqzvkj"  # same size, same footer, other tokens (the tokenizer is uncased: not "REFUND")
    path.write_bytes(bytes(data))
    rc, s = score(capsys, src, bundle, out)
    assert rc == 0 and s["scored"] == ["a.parquet"] and s["changed"][0]["action"] == "rescored"
    texts = pq.read_table(path).column("text").to_pylist()
    assert any("xqzvkj" in t for t in texts)
    # the rescored output holds the new text's scores: a fresh run's bytes, not the old ones
    after = outputs(out)["a.parquet"]
    assert after == fresh(src, bundle, tmp_path)["a.parquet"] and after != before
    edited = [r for r, t in enumerate(texts) if "xqzvkj" in t]
    old_scores, new_scores = (pq.read_table(pa.BufferReader(b)).column("score").to_pylist() for b in (before, after))
    assert any(old_scores[r] != new_scores[r] for r in edited)


# --- data-lake conventions ---------------------------------------------------------------------------------------


def test_hidden_underscore_and_temporary_paths_are_skipped(bundle, tmp_path, capsys):
    src = tmp_path / "archive"
    for d in ("_temporary/0", ".spark-staging", "2026"):
        (src / d).mkdir(parents=True)
    pq.write_table(make_table(10, seed=1), src / "2026" / "part-0.parquet")
    pq.write_table(make_table(10, seed=2), src / ".hidden.parquet")
    pq.write_table(make_table(10, seed=3), src / ".spark-staging" / "part-1.parquet")
    (src / "_temporary" / "0" / "part-9.parquet").write_bytes(b"PAR1 half-written")
    (src / "_SUCCESS").write_text("")
    out = tmp_path / "out"
    rc, s = score(capsys, src, bundle, out)
    assert rc == 0 and s["scored"] == ["2026/part-0.parquet"] and not s["failed"]
    assert set(reader_rows(out).values()) == {10}


def test_hive_partition_keys_are_columns(bundle, tmp_path, capsys):
    src = make_hive_archive(tmp_path / "archive")
    out = tmp_path / "out"
    rc, s = score(capsys, src, bundle, out, "--passthrough", "date", "source")
    assert rc == 0, s
    t = pq.read_table(out / "date=2026-11-28" / "part-0.parquet")
    assert t.column_names[:3] == ["doc_id", "date", "source"] and set(t.column("date").to_pylist()) == {"2026-11-28"}
    read = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert read.num_rows == 30 and set(reader_rows(out).values()) == {30}
    assert sorted(set(read.column("date").to_pylist())) == ["2026-11-27", "2026-11-28"]


def test_nested_text_field_and_binary_text_column(bundle, tmp_path, capsys):
    flat = make_table(20, seed=7)
    texts = flat.column("text").to_pylist()
    src = tmp_path / "archive"
    src.mkdir()
    meta = pa.array([{"body": t, "lang": "en"} for t in texts])
    pq.write_table(pa.table({"doc_id": flat.column("doc_id"), "meta": meta}), src / "nested.parquet")
    raw = [t.encode() for t in texts]
    raw[3] = b"caf\xe9 latin-1"  # not UTF-8
    pq.write_table(pa.table({"doc_id": flat.column("doc_id"), "text": pa.array(raw, pa.binary())}),
                   src / "binary.parquet")
    want = Scorer(bundle, ScoreOptions(id_column="doc_id", threads=1))(flat)
    out = tmp_path / "nested-out"
    rc, s = score(capsys, src / "nested.parquet", bundle, out, "--text-column", "meta.body", "--passthrough",
                  "meta.lang")
    assert rc == 0, s
    got = pq.read_table(out / "nested.parquet")
    assert got.column("label").equals(want.column("label")) and set(got.column("meta.lang").to_pylist()) == {"en"}
    out = tmp_path / "binary-out"
    rc, s = score(capsys, src / "binary.parquet", bundle, out)
    assert rc == 0, s
    got = pq.read_table(out / "binary.parquet")
    errors = got.column("error").to_pylist()
    assert errors[3] == "invalid UTF-8 in binary text" and errors.count(None) == 19
    keep = [i for i in range(20) if i != 3]
    assert got.take(keep).column("label").equals(want.take(keep).column("label"))


def test_schema_drift_is_reported_per_file(bundle, tmp_path, capsys):
    src = tmp_path / "archive"
    src.mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        pq.write_table(make_table(10, seed=seed), src / f"{name}.parquet")
    t = make_table(10, seed=3)
    t = t.set_column(1, "text", pa.array([x.encode() for x in t.column("text").to_pylist()], pa.binary()))
    pq.write_table(t, src / "c.parquet")
    rc, s = score(capsys, src, bundle, tmp_path / "out")
    assert rc == 0 and [(d["path"].rsplit("/", 1)[1], d["columns"]) for d in s["schema_drift"]] == [
        ("c.parquet", {"text": "binary"})]


# --- health in the exit code --------------------------------------------------------------------------------------


def test_all_rows_failing_exits_non_zero_on_every_night(bundle, tmp_path, capsys):
    src = tmp_path / "archive"
    src.mkdir()
    pq.write_table(pa.table({"doc_id": pa.array(range(8), pa.int64()), "text": pa.array([None] * 8, pa.string())}),
                   src / "nulls.parquet")
    out = tmp_path / "out"
    for _ in range(2):  # the rerun skips the file and still reports its rows
        rc, s = score(capsys, src, bundle, out)
        assert rc == 1 and s["error_rate"] == 1.0 and not (out / "_SUCCESS").exists()
        assert "row error rate 100.0% is above --max-error-rate 5.0%" in s["problems"]
    rc, s = score(capsys, src, bundle, out, "--max-error-rate", "1")
    assert rc == 0 and (out / "_SUCCESS").exists()


def _unshare_ok() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare -m for a read-only mount")


@needs_mount
def test_read_only_output_is_a_one_line_message_and_the_rerun_works(night1, bundle, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    script = f"mount --bind -o ro {out} {out} && exec {' '.join(cmd(night1, bundle, out))}"
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, env=env(), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 5, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"docscore score: error: cannot create {out}/_docscore: Read-only file system; pick a writable --output"]
    res = subprocess.run(cmd(night1, bundle, out), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and set(reader_rows(out).values()) == {75}


@needs_mount
def test_full_disk_is_a_one_line_message_and_the_rerun_resumes(night1, bundle, tmp_path):
    out, copy = tmp_path / "out", tmp_path / "copy"
    out.mkdir()
    run = " ".join(cmd(night1, bundle, out, "--checkpoint-rows", "10"))
    script = (f"mount -t tmpfs -o size=24k tmpfs {out} && {{ {run} 2>{tmp_path}/err1; echo $? > {tmp_path}/rc1; }}; "
              f"mount -o remount,size=4m {out} && {run} && cp -r {out} {copy}")
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, env=env(), capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    err = (tmp_path / "err1").read_text().strip().splitlines()
    assert (tmp_path / "rc1").read_text().strip() == "5" and len(err) == 1, err
    assert "No space left on device" in err[0] and "free space and rerun" in err[0]
    assert set(reader_rows(copy).values()) == {75}
    assert_clean(copy)
