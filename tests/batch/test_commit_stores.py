"""The commit layer on a local directory, S3, GCS and Azure Blob (local emulators the tests start): the same lock,
staging, journal and change detection, through ``pyarrow.fs``; the lock's exclusive create through each store's
SDK."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from batch_data import make_table
from emulators import AZURITE_KEY
from s3server import CREDENTIALS

from docscore import storage
from docscore.batch.commit.fingerprint import detect_change, stat_fingerprint
from docscore.batch.commit.lock import WriterLock
from docscore.batch.commit.staging import Staging
from docscore.batch.commit.state import RunState
from docscore.errors import LockHeldError

SECRETS = (AZURITE_KEY, CREDENTIALS["AWS_SECRET_ACCESS_KEY"], CREDENTIALS["AWS_ACCESS_KEY_ID"])
STORES = ["local", "s3", "gcs", "azure"]


@pytest.fixture(params=STORES)
def out(request, tmp_path):
    """An empty output location on each store (GCS by ``STORAGE_EMULATOR_HOST``, Azure by
    ``AZURE_STORAGE_CONNECTION_STRING``: the standard variables, set by the emulator fixtures)."""
    if request.param == "local":
        return storage.resolve(tmp_path / "out")
    if request.param == "s3":
        s3 = request.getfixturevalue("s3")
        return storage.resolve(f"s3://{s3.bucket()}/out", s3.endpoint)
    if request.param == "gcs":
        return storage.resolve(f"gs://{request.getfixturevalue('gcs').bucket()}/out")
    return storage.resolve(f"az://{request.getfixturevalue('azure').container()}/out")


def test_second_writer_is_refused_and_the_lock_is_free_after_release(out):
    with WriterLock(out.path, out.fs, name=out.uri):
        with pytest.raises(LockHeldError, match=rf"another docscore run is writing {out.uri} \(pid {os.getpid()}"):
            WriterLock(out.path, out.fs, name=out.uri).acquire()
    assert not storage.exists(out.fs, out.join("_docscore/lock.json"))
    with WriterLock(out.path, out.fs):
        pass


RACER = """
import json, os, sys
from docscore import storage
from docscore.batch.commit.lock import WriterLock
from docscore.errors import LockHeldError

out = storage.resolve(sys.argv[1])
out.fs.create_dir(out.path, recursive=True)
storage.create_exclusive(out.fs, out.join(f"warm-{os.getpid()}"), b"")  # the SDK's client and connection, ready
print("ready", flush=True)
sys.stdin.readline()  # go
try:
    lock = WriterLock(out.path, out.fs, name=out.uri).acquire()
except LockHeldError as e:
    print(json.dumps({"refused": str(e)}), flush=True)
    sys.exit(0)
print(json.dumps({"won": os.getpid()}), flush=True)
sys.stdin.readline()  # release
lock.release()
"""


def test_two_writers_race_for_the_lock_and_exactly_one_wins(out, request):
    """Two processes, each ready with its client, told to go at once: one holds the lock, the other is refused
    with a message naming the holder (and no credential); once released, the lock is taken again."""
    import docscore

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(docscore.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    if out.uri.startswith("s3://"):
        env["AWS_ENDPOINT_URL"] = request.getfixturevalue("s3").endpoint
    racers = [subprocess.Popen([sys.executable, "-c", RACER, out.uri], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=env) for _ in range(2)]
    try:
        for racer in racers:
            assert racer.stdout.readline().strip() == "ready"
        for racer in racers:
            racer.stdin.write("go\n")
        for racer in racers:
            racer.stdin.flush()
        results = [json.loads(racer.stdout.readline()) for racer in racers]
        winners = [r["won"] for r in results if "won" in r]
        refusals = [r["refused"] for r in results if "refused" in r]
        assert len(winners) == 1 and len(refusals) == 1, results
        assert f"another docscore run is writing {out.uri} (pid {winners[0]} on {socket.gethostname()}" in refusals[0]
        for secret in SECRETS:
            assert secret not in refusals[0]
        with pytest.raises(LockHeldError, match=f"pid {winners[0]} "):
            WriterLock(out.path, out.fs, name=out.uri).acquire()
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.stdin.write("release\n")
                racer.stdin.close()
            assert racer.wait(timeout=60) == 0
    assert not storage.exists(out.fs, out.join("_docscore/lock.json"))
    with WriterLock(out.path, out.fs, name=out.uri) as lock:
        assert lock.holder().pid == os.getpid()


def test_stale_lock_of_another_host_is_taken_over(out):
    info = {"host": "elsewhere", "pid": 1, "started": "2026-11-27T02:00:00+00:00", "heartbeat": 0.0,
            "run_id": "other", "proc_start": None}
    out.fs.create_dir(out.join("_docscore"), recursive=True)
    storage.write_bytes(out.fs, out.join("_docscore/lock.json"), json.dumps(info).encode())
    lock = WriterLock(out.path, out.fs, stale_after_s=600).acquire()
    assert lock.holder().run_id != "other"
    lock.release()


def test_exclusive_create_has_one_winner(out):
    out.fs.create_dir(out.path, recursive=True)
    path = out.join("claim")
    assert storage.create_exclusive(out.fs, path, b"first")
    assert not storage.create_exclusive(out.fs, path, b"second")
    assert storage.read_bytes(out.fs, path) == b"first"


def test_staged_parts_and_published_output_appear_only_when_whole(out, tmp_path):
    st = Staging(out.path, out.fs)
    table = make_table(20)
    for index in range(2):
        tmp = st.inprogress("sub/a.parquet", f"part-{index:05d}")
        pq.write_table(table, tmp, filesystem=st.work_fs)
        assert st.committed_parts("sub/a.parquet", 3) == index  # not committed before commit_part
        st.commit_part(tmp, "sub/a.parquet", index)
    assert st.committed_parts("sub/a.parquet", 3) == 2
    tmp = st.inprogress("sub/a.parquet", "output")
    pq.write_table(table, tmp, filesystem=st.work_fs)
    st.publish(tmp, "sub/a.parquet")
    assert pq.read_table(out.join("sub/a.parquet"), filesystem=out.fs).equals(table)
    st.clean(keep=set())
    st.remove_all()
    files = [i.path for i in out.fs.get_file_info(storage_selector(out)) if i.type.name == "File"]
    assert files == [out.join("sub/a.parquet")]  # nothing staged left, nothing in progress


def storage_selector(out):
    import pyarrow.fs as pafs

    return pafs.FileSelector(out.path, recursive=True, allow_not_found=True)


def test_journal_replays_after_a_kill_and_compacts(out):
    bundle = {"path": "b", "sha256": "0" * 64, "variant": "fp32"}
    state = RunState.open(out, bundle, {"k": 1}, overwrite=False)
    state.record("a.parquet", {"status": "done", "rows": 3})
    state.record("b.parquet", {"status": "pending"})
    state.record("b.parquet", {"status": "done", "rows": 4})
    state.close()  # killed here: the manifest was not rewritten, the journal is the commit record
    again = RunState.open(out, bundle, {"k": 1}, overwrite=False)
    assert again.shards == {"a.parquet": {"status": "done", "rows": 3}, "b.parquet": {"status": "done", "rows": 4}}
    again.record("a.parquet", None)
    again.compact()
    third = RunState.open(out, bundle, {"k": 1}, overwrite=False)
    assert third.shards == {"b.parquet": {"status": "done", "rows": 4}}
    assert not [i for i in out.fs.get_file_info(storage_selector(out)) if "journal" in i.path[len(out.path):] and
                i.type.name == "File"]


def test_change_detection_catches_a_same_size_rewrite_and_not_a_rewrite_of_the_same_bytes(out):
    out.fs.create_dir(out.path, recursive=True)
    path = out.join("in.parquet")
    pq.write_table(make_table(20, seed=1), path, filesystem=out.fs)
    data = storage.read_bytes(out.fs, path)
    fp = stat_fingerprint(path, out.fs)
    changed, fp = detect_change(None, fp, path, out.fs)
    _, fp = detect_change({**fp, "mtime_ns": -1, "sha256": None}, fp, path, out.fs)
    from docscore.files import sha256_file

    fp = {**fp, "sha256": sha256_file(path, out.fs)}
    assert detect_change(fp, stat_fingerprint(path, out.fs), path, out.fs)[0] is False
    storage.write_bytes(out.fs, path, data)  # same bytes again (a copy): new mtime, same content
    assert detect_change({**fp, "mtime_ns": -1}, stat_fingerprint(path, out.fs), path, out.fs)[0] is False
    flipped = bytearray(data)
    flipped[10] ^= 0xFF  # same size, different content, footer untouched
    storage.write_bytes(out.fs, path, bytes(flipped))
    assert detect_change({**fp, "mtime_ns": -1}, stat_fingerprint(path, out.fs), path, out.fs)[0] is True
