"""A run killed with SIGKILL at any point, then rerun, writes byte-identical outputs (no row lost or doubled)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from batch_data import make_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill") / "archive"
    (root / "sub").mkdir(parents=True)
    pq.write_table(make_table(400, seed=21), root / "one.parquet", row_group_size=64)
    pq.write_table(make_table(300, seed=22, start_id=1000), root / "sub" / "two.parquet", row_group_size=100)
    pq.write_table(make_table(20, seed=23, start_id=5000), root / "sub" / "three.parquet")
    return root


def score_cmd(archive, bundle, out) -> list[str]:
    return [sys.executable, "-m", "docscore", "score", str(archive), "--model", str(bundle), "--output", str(out),
            "--id-column", "doc_id", "--threads", "1", "--checkpoint-rows", "40", "--sort-window", "16",
            "--token-budget", "512", "--no-progress"]


def run(cmd, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def outputs(out: Path) -> dict[str, bytes]:
    """Every file a ``OUT/**/*.parquet`` glob sees (polars and DuckDB also descend into ``_`` folders)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def reference(big_archive, bundle, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "out"
    res = run(score_cmd(big_archive, bundle, out))
    assert res.returncode == 0, res.stderr
    ref = outputs(out)
    assert set(ref) == {"one.parquet", "sub/two.parquet", "sub/three.parquet"}
    return ref


def check_resume(out: Path, big_archive, bundle, reference) -> None:
    res = run(score_cmd(big_archive, bundle, out))
    assert res.returncode == 0, res.stderr
    assert outputs(out) == reference
    assert (out / "_SUCCESS").exists()
    assert not list(out.rglob("*.tmp")) and not (out / "_docscore" / "staging").exists()
    assert not (out / "_docscore" / "lock.json").exists()


@pytest.mark.parametrize("failpoint", ["part_committed:3", "part_committed:12", "output_committed:1",
                                       "shard_done:2"])
def test_kill_at_commit_points_then_rerun_is_byte_identical(failpoint, big_archive, bundle, reference, tmp_path):
    out = tmp_path / "out"
    killed = run(score_cmd(big_archive, bundle, out), {"DOCSCORE_FAILPOINT": failpoint})
    assert killed.returncode == -signal.SIGKILL
    check_resume(out, big_archive, bundle, reference)


@pytest.mark.parametrize("parts_seen", [1, 5])
def test_kill_mid_write_then_rerun_is_byte_identical(parts_seen, big_archive, bundle, reference, tmp_path):
    """SIGKILL from outside while parts are being written (not at a commit point)."""
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(score_cmd(big_archive, bundle, out), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "_docscore" / "staging").rglob("part-*"))) >= parts_seen:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # it was still running: the kill interrupted real work
    check_resume(out, big_archive, bundle, reference)
