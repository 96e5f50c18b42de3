"""The OutputCommitter on its own, on a local directory and on S3 (a local endpoint): outputs appear whole and once,
the same bytes whatever the chunking an engine feeds, resume after a kill, failed shards, one writer, _SUCCESS."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from docscore import storage
from docscore.batch.commit import committer as committer_mod
from docscore.batch.commit.layout import WORK_PREFIX
from docscore.batch.commit.committer import OutputCommitter, ShardPlan
from docscore.batch.inputs import Shard
from docscore.batch.options import ScoreOptions
from docscore.batch.summary import RunSummary
from docscore.batch.commit.layout import RUN_MANIFEST, SUCCESS
from docscore.errors import InputDataError, LockHeldError

SCHEMA = pa.schema([pa.field("doc_id", pa.int64()), pa.field("label", pa.string()), pa.field("error", pa.string())])
INPUT = pa.schema([pa.field("doc_id", pa.int64()), pa.field("text", pa.string())])
BUNDLE = {"path": "b", "sha256": "0" * 64, "variant": "fp32"}


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    """An empty output location on each store."""
    if request.param == "local":
        return storage.resolve(tmp_path / "out")
    s3 = request.getfixturevalue("s3")
    return storage.resolve(f"s3://{s3.bucket()}/out", s3.endpoint)


def rows(first: int, n: int) -> pa.Table:
    ids = list(range(first, first + n))
    return pa.table({"doc_id": pa.array(ids, pa.int64()), "label": [f"l{i % 3}" for i in ids],
                     "error": [None if i % 5 else "empty text" for i in ids]}, schema=SCHEMA)


def plan(rel: str, n: int, checkpoint_rows: int, done: int = 0) -> ShardPlan:
    parts = max(1, -(-n // checkpoint_rows))
    return ShardPlan(Shard(f"/in/{rel}", rel), {"size": n}, n, parts, done, checkpoint_rows, SCHEMA, INPUT)


def open_committer(out, options=None) -> OutputCommitter:
    c = OutputCommitter(out, options or ScoreOptions())
    c.setup_job()
    c.open_manifest(BUNDLE, {"k": 1}, overwrite=False)
    c.start(RunSummary(output_dir=out.uri))
    return c


def feed(c: OutputCommitter, p: ShardPlan, chunk: int, stop_after_part: int | None = None) -> None:
    """Feed a shard's rows from its resume point in tables of ``chunk`` rows, as an engine would."""
    c.begin_shard(p)
    for part in range(p.done, p.parts):
        first, end = part * p.checkpoint_rows, part * p.checkpoint_rows + p.part_rows(part)
        for lo in range(first, end, chunk):
            c.write(rows(lo, min(chunk, end - lo)))
        c.commit_part(part)
        if part == stop_after_part:
            return
    c.finish_shard("ab" * 32)


def files(out) -> dict[str, bytes]:
    infos = out.fs.get_file_info(pafs.FileSelector(out.path, recursive=True, allow_not_found=True))
    return {i.path[len(out.path) + 1:]: storage.read_bytes(out.fs, i.path) for i in infos
            if i.type == pafs.FileType.File}


def outputs(out) -> dict[str, bytes]:
    return {k: v for k, v in files(out).items() if k.endswith(".parquet")}


def test_outputs_are_the_same_bytes_whatever_the_engine_chunking(out, tmp_path, monkeypatch):
    monkeypatch.setattr(committer_mod, "ROW_GROUP_ROWS", 8)  # row groups at fixed rows, not at table ends
    c = open_committer(out)
    feed(c, plan("one.parquet", 20, checkpoint_rows=100), chunk=1)
    feed(c, plan("sub/many.parquet", 45, checkpoint_rows=10), chunk=7)
    feed(c, plan("empty.parquet", 0, checkpoint_rows=10), chunk=1)
    c.record_state()
    c.commit_job([Shard("/in/x", r) for r in ("one.parquet", "sub/many.parquet", "empty.parquet")])
    c.close()
    ref = storage.resolve(tmp_path / "ref")
    r = open_committer(ref)
    for rel, n, cp in (("one.parquet", 20, 100), ("sub/many.parquet", 45, 10), ("empty.parquet", 0, 10)):
        feed(r, plan(rel, n, cp), chunk=1000)
    r.close()
    assert outputs(out) == outputs(ref)
    many = pq.read_table(out.join("sub/many.parquet"), filesystem=out.fs)
    assert many.column("doc_id").to_pylist() == list(range(45))
    md = pq.ParquetFile(out.fs.open_input_file(out.join("sub/many.parquet"))).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [8, 2] * 4 + [5]
    assert pq.read_table(out.join("empty.parquet"), filesystem=out.fs).schema == SCHEMA
    left = files(out)
    assert storage.exists(out.fs, out.join(SUCCESS)) and not [k for k in left if k.startswith("_docscore/")]
    manifest = json.loads(left[RUN_MANIFEST])
    assert manifest["shards"]["sub/many.parquet"] == {
        "input": "/in/sub/many.parquet", "fingerprint": {"size": 45, "sha256": "ab" * 32}, "status": "done",
        "rows": 45, "parts": 5, "errors": 9, "columns": {"doc_id": "int64", "text": "string"}}


def test_row_groups_hold_16384_rows_as_the_readme_says(tmp_path):
    """The real constant (the test above shrinks it): 40,000 rows in one part fed in odd chunks."""
    assert committer_mod.ROW_GROUP_ROWS == 16_384
    out = storage.resolve(tmp_path / "out")
    c = open_committer(out)
    feed(c, plan("big.parquet", 40_000, checkpoint_rows=100_000), chunk=3_001)
    c.close()
    md = pq.ParquetFile(out.join("big.parquet")).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [16_384, 16_384, 7_232]


def test_the_lock_defaults_are_the_documented_ones(tmp_path):
    """README: the holder refreshes its heartbeat every 30 s; a lock from another host is stale after 10 minutes."""
    from docscore.batch.commit.lock import WriterLock

    lock = WriterLock(tmp_path)
    assert (lock.heartbeat_s, lock.stale_after_s) == (30.0, 600.0)


def test_a_run_killed_after_two_parts_resumes_to_the_same_bytes(out, tmp_path):
    c = open_committer(out)
    feed(c, plan("a.parquet", 30, checkpoint_rows=10), chunk=4, stop_after_part=1)
    c.write(rows(20, 3))  # mid-part: an in-progress file nobody reads
    c.state.close()
    c._lock.release()  # "killed": no finish, no clean-up, no manifest rewrite
    assert not storage.exists(out.fs, out.join("a.parquet"))

    again = open_committer(out)
    assert again.state.shards["a.parquet"]["status"] == "pending"  # replayed from the journal
    done = again.state.staging.committed_parts("a.parquet", 3)
    assert done == 2
    feed(again, plan("a.parquet", 30, checkpoint_rows=10, done=done), chunk=4)
    again.record_state()
    again.close()
    ref = storage.resolve(tmp_path / "ref")
    r = open_committer(ref)
    feed(r, plan("a.parquet", 30, checkpoint_rows=10), chunk=30)
    r.close()
    assert outputs(out) == outputs(ref)
    assert pq.read_table(out.join("a.parquet"), filesystem=out.fs).column("doc_id").to_pylist() == list(range(30))


def test_the_local_folder_of_files_being_written_goes_when_the_run_ends(out):
    """On an object store, files are written in a local temporary folder (``docscore-staging-<pid>-*``) and uploaded
    whole; the run removes the folder when it ends, finished or not (a killed run's goes with the next run). It used
    to stay in the temporary directory until the next run on the host."""
    def mine() -> set:
        return set(Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}{os.getpid()}-*"))

    before = mine()  # earlier tests' "killed" committers keep theirs, as a killed process would
    c = open_committer(out)
    feed(c, plan("a.parquet", 30, checkpoint_rows=10), chunk=4)
    feed(c, plan("b.parquet", 30, checkpoint_rows=10), chunk=4, stop_after_part=0)
    c.write(rows(10, 3))  # a part in progress when the run ends
    assert out.is_local or mine() - before
    c.close()
    assert mine() == before
    assert storage.exists(out.fs, out.join("a.parquet")) and not storage.exists(out.fs, out.join("b.parquet"))


def test_a_failed_shard_is_dropped_and_journaled_and_the_next_goes_on(out):
    c = open_committer(out)
    p = plan("bad.parquet", 30, checkpoint_rows=10)
    c.begin_shard(p)
    c.write(rows(0, 10))
    c.commit_part(0)
    c.write(rows(10, 4))
    c.fail_shard(p.shard, p.fingerprint, OSError("truncated file"))
    feed(c, plan("good.parquet", 5, checkpoint_rows=10), chunk=5)
    c.record_state()
    c.commit_job([p.shard, Shard("/in/good.parquet", "good.parquet")])
    c.close()
    assert c.summary.files == 1 and c.summary.files_failed == 1
    assert "cannot read: OSError: truncated file" in c.summary.failed[0]["error"]
    manifest = json.loads(storage.read_bytes(out.fs, out.join(RUN_MANIFEST)))
    assert manifest["shards"]["bad.parquet"]["status"] == "failed"
    assert list(outputs(out)) == ["good.parquet"] and not storage.exists(out.fs, out.join(SUCCESS))

    strict = open_committer(out, ScoreOptions(fail_fast=True))
    with pytest.raises(InputDataError, match="truncated"):
        strict.fail_shard(p.shard, p.fingerprint, OSError("truncated file"))
    strict.close()


def test_one_writer_at_a_time(out):
    c = open_committer(out)
    with pytest.raises(LockHeldError, match="another docscore run is writing"):
        OutputCommitter(out, ScoreOptions()).setup_job()
    c.close()
    open_committer(out).close()  # released
