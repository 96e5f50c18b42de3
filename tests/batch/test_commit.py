"""The commit protocol's parts on their own: writer lock, staging clean-up, change detection."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from batch_data import make_table

from docscore.batch.commit.fingerprint import DigestingFile, detect_change, stat_fingerprint
from docscore.batch.commit.lock import LockInfo, WriterLock
from docscore.batch.commit.staging import Staging
from docscore.files import sha256_file
from docscore.errors import LockHeldError


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(out, **fields) -> None:
    info = {"host": os.uname().nodename, "pid": os.getpid(), "started": "2026-11-27T02:00:00+00:00",
            "heartbeat": 0.0, "run_id": "other", "proc_start": None, **fields}
    (out / "_docscore").mkdir(parents=True, exist_ok=True)
    (out / "_docscore" / "lock.json").write_text(json.dumps(info))


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    with WriterLock(tmp_path):
        with pytest.raises(LockHeldError, match=rf"pid {os.getpid()} on {os.uname().nodename}, started 20"):
            WriterLock(tmp_path).acquire()
    assert not (tmp_path / "_docscore" / "lock.json").exists()
    with WriterLock(tmp_path):  # released: free again
        pass


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    write_lock(tmp_path, pid=dead_pid())
    lock = WriterLock(tmp_path).acquire()
    assert lock.holder().pid == os.getpid() and lock.holder().run_id != "other"
    lock.release()


def test_other_host_is_stale_only_after_its_heartbeat_times_out(tmp_path):
    import time

    write_lock(tmp_path, host="elsewhere", pid=1, heartbeat=time.time())
    with pytest.raises(LockHeldError, match="elsewhere"):
        WriterLock(tmp_path, stale_after_s=600).acquire()
    write_lock(tmp_path, host="elsewhere", pid=1, heartbeat=time.time() - 601)
    WriterLock(tmp_path, stale_after_s=600).acquire().release()


def test_heartbeat_refreshes_the_lock(tmp_path):
    import time

    lock = WriterLock(tmp_path, heartbeat_s=0.05).acquire()
    first = lock.holder().heartbeat
    time.sleep(0.3)
    assert lock.holder().heartbeat > first and isinstance(lock.holder(), LockInfo)
    lock.release()


def test_staging_clean_removes_leftovers_and_keeps_resumable_parts(tmp_path):
    st = Staging(tmp_path)
    keep, drop = st.shard_dir("a.parquet"), st.shard_dir("sub/b.parquet")
    os.makedirs(keep)
    os.makedirs(drop)
    for path in (st.part("a.parquet", 0), st.inprogress("a.parquet", "part-00001"), st.part("sub/b.parquet", 0)):
        open(path, "w").close()
    (tmp_path / "_parts" / "x.parquet").mkdir(parents=True)  # the layout before _docscore/
    (tmp_path / "_parts" / "x.parquet" / "part-00000.parquet").write_text("")
    (tmp_path / "c.parquet.tmp").write_text("")
    removed = st.clean(keep={"a.parquet"})
    assert len(removed) == 4
    assert os.path.exists(st.part("a.parquet", 0)) and not os.path.exists(drop)
    assert not (tmp_path / "_parts").exists() and not (tmp_path / "c.parquet.tmp").exists()


@pytest.fixture
def pfile(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(make_table(600, seed=5), path, row_group_size=100, compression="none",
                   write_statistics=False)
    return path


@pytest.mark.parametrize("columns,row_groups", [(["text"], None), (["doc_id", "text", "source"], None),
                                                (["text"], [2, 3, 4, 5])])
def test_digest_while_reading_is_the_files_sha256(pfile, columns, row_groups):
    with DigestingFile(pfile) as f:
        pf = pq.ParquetFile(f)
        f.start()
        for _ in pf.iter_batches(batch_size=64, columns=columns, row_groups=row_groups or range(pf.num_row_groups)):
            pass
        digest = f.hexdigest()
    assert digest == hashlib.sha256(pfile.read_bytes()).hexdigest() == sha256_file(pfile)


def test_same_size_edit_is_detected_and_a_touch_is_not(pfile):
    fp = {**stat_fingerprint(pfile), "sha256": sha256_file(pfile)}
    os.utime(pfile, ns=(fp["mtime_ns"] + 10**9, fp["mtime_ns"] + 10**9))  # touched, same bytes
    changed, new = detect_change(fp, stat_fingerprint(pfile), pfile)
    assert not changed and new["sha256"] == fp["sha256"]
    data = bytearray(pfile.read_bytes())
    i = data.index(b"invoice", len(data) // 3)
    data[i:i + 7] = b"INVOICE"  # same size, footer untouched
    pfile.write_bytes(bytes(data))
    now = stat_fingerprint(pfile)
    assert now["size"] == fp["size"] and now["tail_sha256"] == fp["tail_sha256"]
    changed, new = detect_change(fp, now, pfile)
    assert changed and new["sha256"] != fp["sha256"]
