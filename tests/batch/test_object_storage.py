"""``docscore score`` on object storage (a local S3 endpoint the tests start): the same outputs, resume, lock and
one-line errors as on a local disk, with credentials nowhere in messages or outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from s3server import CREDENTIALS

from docscore.cli import main

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--id-column", "doc_id", "--threads", "1", "--sort-window", "16", "--token-budget", "512", "--no-progress",
         "--checkpoint-rows", "10"]
SECRETS = (CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def archive(store_archive) -> Path:
    return store_archive


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DOCSCORE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def local_outputs(archive, bundle, tmp_path) -> dict[str, bytes]:
    """The reference: the same archive scored local → local."""
    out = tmp_path / "local-out"
    assert main(["score", str(archive), "--model", str(bundle), "--output", str(out), *FLAGS]) == 0
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.parquet")}


def s3_outputs(s3, bucket: str, prefix: str) -> dict[str, bytes]:
    keys = [k for k in s3.keys(bucket, prefix + "/") if k.endswith(".parquet")]
    return {k[len(prefix) + 1:]: s3.get(bucket, k) for k in keys}


def assert_clean(s3, bucket: str, prefix: str) -> None:
    """Only outputs and docscore's own _-prefixed records: no lock, no staging, no credentials anywhere (empty
    ``folder/`` markers, which pyarrow keeps so that a folder outlives its last file, hold nothing)."""
    keys = [k for k in s3.keys(bucket, prefix + "/") if not k.endswith("/")]
    assert not [k for k in keys if "/_docscore/" in k and "/_docscore/reuse/" not in k], keys
    assert f"{prefix}/_SUCCESS" in keys
    for key in keys:
        if not key.endswith(".parquet"):  # records and score files (Parquet bytes: searched as bytes)
            body = s3.get(bucket, key)
            assert not any(secret.encode() in body for secret in SECRETS), key


def test_s3_to_s3_equals_local_to_local(s3, archive, bundle, local_outputs, cache, capsys):
    bucket = s3.bucket()
    src = s3.upload(archive, bucket, "archive")
    model = s3.upload(bundle, bucket, "models/bundle")
    capsys.readouterr()
    rc = main(["score", src + "/", "--model", model, "--output", f"s3://{bucket}/scores/", "--s3-endpoint",
               s3.endpoint, *FLAGS, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["rows"] == 55 and summary["output_dir"] == f"s3://{bucket}/scores"
    assert s3_outputs(s3, bucket, "scores") == local_outputs  # byte-identical, same relative paths
    assert_clean(s3, bucket, "scores")
    manifest = json.loads(s3.get(bucket, "scores/_docscore_run.json"))
    assert manifest["bundle"]["path"] == model and manifest["shards"]["a.parquet"]["input"] == f"{src}/a.parquet"

    rc = main(["score", src + "/", "--model", model, "--output", f"s3://{bucket}/scores/", "--s3-endpoint",
               s3.endpoint, *FLAGS, "--json"])  # the next night: nothing changed, nothing rescored
    again = json.loads(capsys.readouterr().out)
    assert rc == 0 and again["files_skipped"] == 2 and again["files"] == 0

    assert main(["report", f"s3://{bucket}/scores", "--s3-endpoint", s3.endpoint, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 2 and report["rows"] == 55 and report["last_run"]["success_marker"] is True


def test_glob_and_the_standard_endpoint_variable(s3, archive, bundle, local_outputs, monkeypatch, capsys):
    bucket = s3.bucket()
    src = s3.upload(archive, bucket, "archive")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    rc = main(["score", src + "/**/*.parquet", "--model", str(bundle), "--output", f"s3://{bucket}/scores",
               *FLAGS])
    assert rc == 0
    assert s3_outputs(s3, bucket, "scores") == local_outputs


def test_a_killed_run_on_s3_resumes_to_identical_outputs(s3, archive, bundle, local_outputs, tmp_path):
    bucket = s3.bucket()
    src = s3.upload(archive, bucket, "archive")
    out = f"s3://{bucket}/scores"
    cmd = [sys.executable, "-m", "docscore", "score", src, "--model", str(bundle), "--output", out, *FLAGS]
    env = {**os.environ, "AWS_ENDPOINT_URL": s3.endpoint, "PYTHONPATH": str(ROOT)}
    killed = subprocess.Popen(cmd, cwd=ROOT, env={**env, "DOCSCORE_FAILPOINT": "part_committed:4"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert killed.wait(timeout=180) == -9, killed.communicate()
    keys = s3.keys(bucket, "scores/")
    assert "scores/_docscore/lock.json" in keys and "scores/_SUCCESS" not in keys
    assert not [k for k in keys if k.endswith(".parquet") and "/_" not in k[len("scores"):]
                and k[len("scores/"):] not in local_outputs]  # only whole outputs are visible
    left = list(Path(tempfile.gettempdir()).glob(f"docscore-staging-{killed.pid}-*"))
    assert left  # the files it was writing, on this host
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert s3_outputs(s3, bucket, "scores") == local_outputs
    assert_clean(s3, bucket, "scores")
    assert not [p for p in left if p.exists()]  # the killed run's local files being written are removed


def test_second_writer_on_s3_is_refused(s3, archive, bundle, tmp_path):
    bucket = s3.bucket()
    src = s3.upload(archive, bucket, "archive")
    out, release = f"s3://{bucket}/scores", tmp_path / "release"
    cmd = [sys.executable, "-m", "docscore", "score", src, "--model", str(bundle), "--output", out, *FLAGS]
    env = {**os.environ, "AWS_ENDPOINT_URL": s3.endpoint, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(cmd, cwd=ROOT, env={**env, "DOCSCORE_FAILPOINT": f"part_committed:1:wait={release}"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not [k for k in s3.keys(bucket, "scores/_docscore/") if k.endswith(".staged")]:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.1)
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    release.touch()
    assert first.wait(timeout=120) == 0, first.communicate()
    assert second.returncode == 6
    assert f"another docscore run is writing {out} (pid {first.pid} on " in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1


def one_line_error(capsys, args) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not any(secret in err for secret in SECRETS)
    return rc, err


def test_wrong_endpoint_and_missing_buckets_are_one_line_errors_naming_the_uri(s3, archive, bundle, tmp_path,
                                                                             cache, capsys):
    bucket = s3.bucket()
    src = s3.upload(archive, bucket, "archive")
    rc, err = one_line_error(capsys, ["score", src, "--model", str(bundle), "--output", str(tmp_path / "o"),
                                      "--s3-endpoint", "http://127.0.0.1:1", *FLAGS])
    assert rc == 2 and src in err
    rc, err = one_line_error(capsys, ["score", "s3://no-such-bucket/archive", "--model", str(bundle), "--output",
                                      str(tmp_path / "o"), "--s3-endpoint", s3.endpoint, *FLAGS])
    assert rc == 2 and "s3://no-such-bucket/archive" in err
    rc, err = one_line_error(capsys, ["score", src, "--model", str(bundle), "--output", "s3://no-such-bucket/out",
                                      "--s3-endpoint", s3.endpoint, *FLAGS])
    assert rc == 5 and "s3://no-such-bucket/out" in err
    rc, err = one_line_error(capsys, ["score", src, "--model", "s3://no-such-bucket/bundle", "--output",
                                      str(tmp_path / "o"), "--s3-endpoint", s3.endpoint, *FLAGS])
    assert rc == 4 and "s3://no-such-bucket/bundle" in err
    rc, err = one_line_error(capsys, ["score", f"s3://{CREDENTIALS['AWS_ACCESS_KEY_ID']}:"
                                      f"{CREDENTIALS['AWS_SECRET_ACCESS_KEY']}@{bucket}/archive", "--model",
                                      str(bundle), "--output", str(tmp_path / "o"), *FLAGS])
    assert rc == 2 and "credentials are never taken from a URI" in err


def test_bundle_from_s3_is_cached_and_hash_checked(s3, bundle, cache):
    from docscore.bundle import load_bundle_uri

    bucket = s3.bucket()
    model = s3.upload(bundle, bucket, "models/bundle")
    loaded = load_bundle_uri(model, s3.endpoint)
    assert loaded.uri == model and loaded.path.parent == cache / "bundles"
    assert loaded.sha256 == load_bundle_uri(bundle).sha256
    tampered = s3.upload(bundle, bucket, "models/tampered")
    s3.client.put_object(Bucket=bucket, Key="models/tampered/tokenizer.json", Body=b"{}")
    import shutil

    shutil.rmtree(cache)
    from docscore.errors import BundleError

    with pytest.raises(BundleError, match="hash check"):
        load_bundle_uri(tampered, s3.endpoint)


def test_verify_a_bundle_on_s3(s3, bundle, cache, monkeypatch, capsys):
    bucket = s3.bucket()
    model = s3.upload(bundle, bucket, "models/bundle")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    assert main(["verify", "--model", model]) == 0
    s3.client.put_object(Bucket=bucket, Key="models/bundle/tokenizer.json", Body=b"{}")
    capsys.readouterr()
    assert main(["verify", "--model", model]) == 4  # the cached copy is refreshed, not trusted
    assert "tokenizer.json" in capsys.readouterr().err


def test_export_onnx_to_s3_uploads_the_manifest_last_and_verify_passes(s3, tiny_checkpoint_factory, cache,
                                                                        monkeypatch, capsys):
    from docscore import storage

    bucket = s3.bucket()
    uri = f"s3://{bucket}/models/bundle"
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    s3.client.put_object(Bucket=bucket, Key="models/bundle/docscore.json", Body=b'{"files": {"stale.onnx": ""}}')
    s3.client.put_object(Bucket=bucket, Key="models/bundle/stale.onnx", Body=b"old")  # an older bundle there
    order = []
    put_file = storage.put_file

    def recording(local, fs, path):
        order.append(path.rsplit("/", 1)[1])
        put_file(local, fs, path)

    monkeypatch.setattr(storage, "put_file", recording)
    assert main(["export-onnx", str(tiny_checkpoint_factory()), "--output", uri, "--verify-rows", "16"]) == 0
    assert f"bundle {uri} " in capsys.readouterr().out
    assert order[-1] == "docscore.json" and {"model.onnx", "tokenizer.json"} <= set(order[:-1])
    keys = s3.keys(bucket, "models/bundle/")
    assert "models/bundle/stale.onnx" not in keys and "models/bundle/docscore.json" in keys
    assert not any(secret in s3.get(bucket, "models/bundle/docscore.json").decode() for secret in SECRETS)
    monkeypatch.setattr(storage, "put_file", put_file)
    assert main(["verify", "--model", uri]) == 0
    assert "hashes ok" in capsys.readouterr().out
