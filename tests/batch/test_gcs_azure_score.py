"""``docscore score --output gs://...`` and ``--output az://...`` on local emulators (fake-gcs-server, Azurite): the
run takes the one-writer lock through the store's SDK, writes the same bytes as a local run, and a second writer is
refused naming the first; no credential in any message or record. Inputs and bundle stay local here: reading
them from these stores goes through the same ``pyarrow.fs`` code as S3 and is not what this file tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from emulators import AZURITE_KEY

from docscore import storage
from docscore.cli import main

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--id-column", "doc_id", "--threads", "1", "--sort-window", "16", "--token-budget", "512", "--no-progress",
         "--checkpoint-rows", "10"]


@pytest.fixture
def archive(store_archive) -> Path:
    return store_archive


@pytest.fixture(params=["gcs", "azure"])
def remote(request) -> str:
    """An output URI on an empty bucket (GCS) or container (Azure), found through the standard variables."""
    if request.param == "gcs":
        return f"gs://{request.getfixturevalue('gcs').bucket()}/scores"
    return f"az://{request.getfixturevalue('azure').container()}/scores"


def files(uri: str) -> dict[str, bytes]:
    loc = storage.resolve(uri)
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
    return {i.path[len(loc.path) + 1:]: storage.read_bytes(loc.fs, i.path) for i in infos
            if i.type == pafs.FileType.File}


def test_score_to_gcs_and_azure_equals_local(remote, archive, bundle, tmp_path, capsys):
    local = tmp_path / "local-out"
    assert main(["score", str(archive), "--model", str(bundle), "--output", str(local), *FLAGS]) == 0
    expected = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*.parquet")}
    capsys.readouterr()
    rc = main(["score", str(archive), "--model", str(bundle), "--output", remote + "/", *FLAGS, "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["rows"] == 55 and summary["output_dir"] == remote
    written = files(remote)
    assert {k: v for k, v in written.items() if k.endswith(".parquet")} == expected  # byte-identical
    assert "_SUCCESS" in written and not [k for k in written if k.startswith("_docscore/")
                                    and not k.startswith("_docscore/reuse/")]  # lock released, no staging
    for key, body in written.items():
        assert AZURITE_KEY.encode() not in body, key
    assert AZURITE_KEY not in captured.err + captured.out
    rc = main(["score", str(archive), "--model", str(bundle), "--output", remote, *FLAGS, "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    again = json.loads(captured.out)
    assert again["files_skipped"] == 2 and again["files"] == 0  # the next night: nothing rescored


def test_second_writer_on_gcs_and_azure_is_refused(remote, archive, bundle, tmp_path):
    release = tmp_path / "release"
    cmd = [sys.executable, "-m", "docscore", "score", str(archive), "--model", str(bundle), "--output", remote,
           *FLAGS]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen(cmd, cwd=ROOT, env={**env, "DOCSCORE_FAILPOINT": f"part_committed:1:wait={release}"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loc = storage.resolve(remote)
    deadline = time.monotonic() + 120
    while not storage.exists(loc.fs, loc.join("_docscore/lock.json")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.1)
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    release.touch()
    assert first.wait(timeout=120) == 0, first.communicate()
    assert second.returncode == 6, second.stderr
    assert f"another docscore run is writing {remote} (pid {first.pid} on " in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and AZURITE_KEY not in second.stderr
