"""The writer lock fences: a run whose lock another run took over (it was paused past the stale limit, or its clock
was behind) stops at its next commit step with exit 7, naming the new holder, and changes nothing in ``OUT`` after
the loss; the heartbeat and the release never rewrite or remove the new holder's lock. On a local disk, S3, GCS and
Azure Blob (local endpoints the tests start)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from docscore import storage
from docscore.batch.commit.lock import WriterLock
from docscore.batch.commit.committer import OutputCommitter, ShardPlan
from docscore.batch.inputs import Shard
from docscore.batch.options import ScoreOptions
from docscore.batch.summary import RunSummary
from docscore.batch.commit.layout import RUN_MANIFEST, SUCCESS
from docscore.cli import main
from docscore.errors import LockLostError

ROOT = Path(__file__).resolve().parents[2]
LOCK = "_docscore/lock.json"
NEW_HOLDER = {"host": "vm-b", "pid": 4242, "started": "2026-12-01T02:15:00+00:00", "run_id": "the-new-holder",
              "proc_start": None}
LOST = r"lost the lock on {} to pid 4242 on vm-b, started 2026-12-01T02:15:00\+00:00"


def location(store: str, request, tmp_path):
    if store == "local":
        return storage.resolve(tmp_path / "out")
    if store == "s3":
        s3 = request.getfixturevalue("s3")
        return storage.resolve(f"s3://{s3.bucket()}/out", s3.endpoint)
    if store == "gcs":
        return storage.resolve(f"gs://{request.getfixturevalue('gcs').bucket()}/out")
    return storage.resolve(f"az://{request.getfixturevalue('azure').container()}/out")


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def out(request, tmp_path):
    """An empty output location on each store."""
    return location(request.param, request, tmp_path)


@pytest.fixture(params=["local", "s3"])
def out2(request, tmp_path):
    return location(request.param, request, tmp_path)


def take_over(out) -> bytes:
    """What a run on another host does with a lock it judged stale: remove it, then create its own exclusively."""
    path = out.join(LOCK)
    storage.delete(out.fs, path)
    data = json.dumps({**NEW_HOLDER, "heartbeat": time.time()}).encode()
    assert storage.create_exclusive(out.fs, path, data)
    return data


def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def reads_from_before(monkeypatch, out, path: str) -> None:
    """From now on, reads of the lock return what it held before the takeover: a heartbeat or a release that read
    the lock, was paused, and acts after another run took it over."""
    read_bytes, read_versioned = storage.read_bytes, storage.read_versioned
    raw, versioned = read_bytes(out.fs, path), read_versioned(out.fs, path)
    monkeypatch.setattr(storage, "read_bytes", lambda fs, p: raw if p == path else read_bytes(fs, p))
    monkeypatch.setattr(storage, "read_versioned", lambda fs, p: versioned if p == path else read_versioned(fs, p))


# --- the lock --------------------------------------------------------------------------------------------------


def test_a_lock_taken_over_fences_its_old_holder(out):
    lock = WriterLock(out.path, out.fs, heartbeat_s=0.05, name=out.uri).acquire()
    lock.check()  # its own: passes
    new = take_over(out)
    wait_until(lambda: lock.lost, "the heartbeat to see the new holder")
    with pytest.raises(LockLostError):
        lock.check(read=False)  # no read: the heartbeat's flag
    lost = LOST.format(re.escape(out.uri))
    with pytest.raises(LockLostError, match=lost) as e:
        lock.check()
    assert LockLostError.exit_code == 7 and len(str(e.value).splitlines()) == 1
    with pytest.raises(LockLostError, match=lost):
        lock.check(read=False)
    time.sleep(0.2)  # more heartbeats
    lock.release()
    assert storage.read_bytes(out.fs, out.join(LOCK)) == new  # never rewritten, never removed


def test_check_reads_the_lock_before_the_heartbeat_sees_the_takeover(out):
    lock = WriterLock(out.path, out.fs, heartbeat_s=3600, name=out.uri).acquire()
    new = take_over(out)
    assert not lock.lost  # no heartbeat yet
    with pytest.raises(LockLostError, match=LOST.format(re.escape(out.uri))):
        lock.check()
    lock.release()
    assert storage.read_bytes(out.fs, out.join(LOCK)) == new


def test_a_heartbeat_that_read_the_lock_before_a_takeover_never_overwrites_it(out, monkeypatch):
    """The heartbeat re-reads the lock, then writes conditionally (If-Match / ifGenerationMatch; on a local disk
    through the file it created): paused between the two while another run took over, it writes nothing."""
    lock = WriterLock(out.path, out.fs, heartbeat_s=0.05, name=out.uri).acquire()
    path = out.join(LOCK)
    reads_from_before(monkeypatch, out, path)
    new = take_over(out)
    wait_until(lambda: lock.lost, "the heartbeat's conditional write to fail")
    time.sleep(0.2)
    monkeypatch.undo()
    assert storage.read_bytes(out.fs, path) == new
    with pytest.raises(LockLostError):
        lock.check(read=False)
    lock.release()
    assert storage.read_bytes(out.fs, path) == new


# not on GCS here: fake-gcs-server ignores ifGenerationMatch on a DELETE (GCS itself honours it)
@pytest.mark.parametrize("store", ["local", "s3", "azure"])
def test_a_release_that_read_the_lock_before_a_takeover_never_removes_it(store, request, tmp_path, monkeypatch):
    out = location(store, request, tmp_path)
    lock = WriterLock(out.path, out.fs, heartbeat_s=3600, name=out.uri).acquire()
    path = out.join(LOCK)
    reads_from_before(monkeypatch, out, path)
    new = take_over(out)
    lock.release()  # it reads "mine", then deletes only the file / version it read
    monkeypatch.undo()
    assert storage.read_bytes(out.fs, path) == new


# --- the committer: every commit step proves ownership first ---------------------------------------------------

SCHEMA = pa.schema([pa.field("doc_id", pa.int64()), pa.field("label", pa.string()), pa.field("error", pa.string())])
INPUT = pa.schema([pa.field("doc_id", pa.int64()), pa.field("text", pa.string())])


def rows(first: int, n: int) -> pa.Table:
    ids = list(range(first, first + n))
    return pa.table({"doc_id": pa.array(ids, pa.int64()), "label": ["x"] * n, "error": [None] * n}, schema=SCHEMA)


def plan(rel: str, n: int, checkpoint_rows: int = 10) -> ShardPlan:
    parts = max(1, -(-n // checkpoint_rows))
    return ShardPlan(Shard(f"/in/{rel}", rel), {"size": n}, n, parts, 0, checkpoint_rows, SCHEMA, INPUT)


def files(out) -> dict[str, bytes]:
    """Every file under OUT but the lock (the new holder's, whose heartbeat rewrites it)."""
    found = {}
    for info in out.fs.get_file_info(pafs.FileSelector(out.path, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File and info.path != out.join(LOCK):
            try:
                data = storage.read_bytes(out.fs, info.path)
            except OSError:
                data = None
            if data is not None:  # else removed since the listing (by a run at work while the test polls)
                found[info.path[len(out.path) + 1:]] = data
    return found


def test_a_committer_that_lost_the_lock_changes_nothing_more(out2):
    out = out2
    c = OutputCommitter(out, ScoreOptions())
    c.setup_job()
    c.open_manifest({"path": "b", "sha256": "0" * 64, "variant": "fp32"}, {"k": 1}, overwrite=False)
    c.start(RunSummary(output_dir=out.uri))
    done, a, b = plan("done.parquet", 5), plan("a.parquet", 30), plan("b.parquet", 5)
    c.begin_shard(done)
    c.write(rows(0, 5))
    c.commit_part(0)
    c.finish_shard("ab" * 32)
    c.begin_shard(a)
    c.write(rows(0, 10))
    c.commit_part(0)
    c.write(rows(10, 4))
    before = files(out)
    assert "done.parquet" in before and "_docscore/staging/a.parquet.parts/part-00000.staged" in before
    new = take_over(out)
    lost = LOST.format(re.escape(out.uri))
    with pytest.raises(LockLostError, match=lost):
        c.write(rows(14, 6))
        c.commit_part(1)  # a part
    with pytest.raises(LockLostError, match=lost):
        c.write(rows(0, 1))  # the loss is known now: not even a row more
    c.abort()
    with pytest.raises(LockLostError):
        c.begin_shard(b)  # a journal event
    with pytest.raises(LockLostError):
        c.fail_shard(b.shard, b.fingerprint, OSError("unreadable"))
    with pytest.raises(LockLostError):
        c.record_state()  # the manifest, the journal's compaction, the summary
    with pytest.raises(LockLostError):
        c.commit_job([done.shard])  # staging removal, _SUCCESS
    with pytest.raises(LockLostError):
        c.state.staging.clean(keep=set())
    with pytest.raises(LockLostError):
        c.state.discard("done.parquet")
    c.close()
    assert files(out) == before  # nothing published, recorded or removed after the loss
    assert storage.read_bytes(out.fs, out.join(LOCK)) == new and SUCCESS not in before


# --- a whole run, paused past the stale limit and resumed after another run took over ---------------------------

# A run "on another host": its own host name, and the lock's timings short enough for a test.
SHIM = """
import socket, sys
host, stale, beat = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
socket.gethostname = lambda: host
from docscore.batch.commit import lock as commit
init = commit.WriterLock.__init__
def short(self, *args, stale_after_s=stale, heartbeat_s=beat, **kwargs):
    init(self, *args, stale_after_s=stale_after_s, heartbeat_s=heartbeat_s, **kwargs)
commit.WriterLock.__init__ = short
from docscore.cli import main
sys.exit(main(sys.argv[4:]))
"""
FLAGS = ["--id-column", "doc_id", "--threads", "1", "--sort-window", "16", "--token-budget", "512", "--no-progress",
         "--checkpoint-rows", "10"]
SECOND = ["--long-docs", "chunk", "--overwrite"]  # the new holder's options: its outputs are told apart by them


def test_a_paused_run_taken_over_stops_with_exit_7_and_publishes_nothing_more(out2, request, store_archive, bundle,
                                                                              tmp_path):
    """The first run stops (SIGSTOP: a paused VM) after two committed parts; its heartbeat goes stale; a second run
    (another host, other options, --overwrite) takes the lock over and is itself held at its first part; the first
    resumes: exit 7 naming the second, nothing changed in OUT by it; the second finishes: its outputs, its manifest,
    its _SUCCESS."""
    out = out2
    ref = tmp_path / "ref"
    assert main(["score", str(store_archive), "--model", str(bundle), "--output", str(ref), *FLAGS, *SECOND]) == 0
    reference = {p.relative_to(ref).as_posix(): p.read_bytes() for p in ref.rglob("*.parquet")}

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    if out.uri.startswith("s3://"):
        env["AWS_ENDPOINT_URL"] = request.getfixturevalue("s3").endpoint
    go1, go2 = tmp_path / "go1", tmp_path / "go2"
    score = ["score", str(store_archive), "--model", str(bundle), "--output", out.uri, *FLAGS]
    first = subprocess.Popen([sys.executable, "-c", SHIM, "vm-a", "600", "0.1", *score], cwd=ROOT,
                             env={**env, "DOCSCORE_FAILPOINT": f"part_committed:2:wait={go1}"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        wait_until(lambda: "_docscore/staging/a.parquet.parts/part-00001.staged" in files(out)
                   or first.poll() is not None,
                   "the first run's second part", timeout=120)
        assert first.poll() is None, first.communicate()
        time.sleep(0.3)  # at the failpoint
        first.send_signal(signal.SIGSTOP)
        time.sleep(1.5)  # its heartbeat is now older than the second run's stale limit (1 s)
        second = subprocess.Popen([sys.executable, "-c", SHIM, "vm-b", "1", "0.1", *score, *SECOND], cwd=ROOT,
                                  env={**env, "DOCSCORE_FAILPOINT": f"part_committed:1:wait={go2}"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def second_holds_a_part() -> bool:
            """Its lock, its manifest, and only its first part (the first run's two were discarded)."""
            if second.poll() is not None:
                return True
            holder, now = WriterLock(out.path, out.fs).holder(), files(out)
            parts = sorted(k for k in now if k.startswith("_docscore/staging/a.parquet.parts/")
                           and k.endswith(".staged"))  # (each has its score part beside it)
            return (holder is not None and holder.host == "vm-b" and RUN_MANIFEST in now
                    and json.loads(now[RUN_MANIFEST])["options"]["long_docs"] == "chunk"
                    and parts == ["_docscore/staging/a.parquet.parts/part-00000.staged"])

        wait_until(second_holds_a_part, "the second run to take over and commit a part", timeout=120)
        assert second.poll() is None, second.communicate()
        time.sleep(0.3)  # at its failpoint
        before = files(out)

        go1.touch()
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 7, err
        holder = WriterLock(out.path, out.fs).holder()
        assert holder.host == "vm-b" and holder.pid == second.pid
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"docscore score: error: lost the lock on {out.uri} to pid {second.pid} on vm-b, started "), err
        assert files(out) == before  # the first published, recorded and removed nothing after the loss
        assert SUCCESS not in before

        go2.touch()
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
    finally:
        go1.touch()
        go2.touch()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
    left = files(out)
    assert {k: v for k, v in left.items() if k.endswith(".parquet")} == reference  # the second run's, whole
    assert SUCCESS in left and not [k for k in left if k.startswith("_docscore/")
                                    and not k.startswith("_docscore/reuse/")]  # (the score files stay)
    assert not storage.exists(out.fs, out.join(LOCK))
    manifest = json.loads(left[RUN_MANIFEST])
    assert manifest["options"]["long_docs"] == "chunk" and set(manifest["shards"]) == set(reference)
