"""A bundle is untrusted input: every path its manifest names is a plain relative path inside the bundle, checked
before anything is read, fetched or written, on a local disk and on object storage (a local S3 endpoint).

Each attack is what anyone who can write the model folder or bucket can do: edit ``docscore.json``, put files
beside it and recompute the manifest's digest (:func:`docscore.bundle.manifest_digest`). Every one is refused by
``docscore score`` and ``docscore verify`` with exit 4 and one line naming the entry, writes nothing outside the
bundle and leaves nothing in the bundle cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import stat
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from docscore.bundle import DIGEST_KEY, MANIFEST_NAME, manifest_digest, path_problem
from docscore.cli import main

sys.path.insert(0, str(Path(__file__).parent / "batch"))  # the local S3 endpoint fixture lives with the batch tests
from s3server import s3  # noqa: E402,F401

FLAGS = ["--id-column", "doc_id", "--threads", "1", "--no-progress"]
# The bundle sits three folders below tmp_path, as the cache's temporary copy does (cache/bundles/.tmp), so one
# climbing entry aims at the same place, tmp_path/outside/, from either.
CLIMB = "../../../outside/model.onnx"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rename_model(m: dict, rel: str) -> None:
    """Point the fp32 variant at ``rel`` and list it in place of model.onnx, with the model's own hash."""
    m["files"][rel] = m["files"].pop("model.onnx")
    m["variants"]["fp32"]["file"] = rel


# Each attack edits the manifest (the digest is recomputed afterwards) and returns the files it puts at
# bundle/REL: on a disk, written there (wherever REL leads); on S3, objects under the bundle's prefix + "/" + REL.
def climbing_entry(m, root, outside, model):
    rename_model(m, CLIMB)
    return {CLIMB: model}


def absolute_entry(m, root, outside, model):
    rel = str(outside / "model.onnx")
    rename_model(m, rel)
    return {rel: model}


def backslash_entry(m, root, outside, model):
    rel = "..\\..\\..\\outside\\model.onnx"
    rename_model(m, rel)
    return {rel: model}


def variant_not_in_files(m, root, outside, model):
    del m["files"]["model.onnx"]  # the model is still there, but no hash covers it any more
    return {}


def symlinked_model(m, root, outside, model):
    (outside / "model.onnx").write_bytes(model)
    (root / "model.onnx").unlink()
    (root / "model.onnx").symlink_to(outside / "model.onnx")
    return {}


def symlinked_folder(m, root, outside, model):
    (outside / "model.onnx").write_bytes(model)
    (root / "model.onnx").unlink()
    (root / "weights").symlink_to(outside, target_is_directory=True)
    rename_model(m, "weights/model.onnx")
    return {}


# attack -> (the entry the refusal names, the rule it states)
ATTACKS = {
    climbing_entry: (CLIMB, "'..' component"),
    absolute_entry: (None, "absolute path"),  # the entry is tmp_path-dependent: checked in the test
    backslash_entry: ("..\\..\\..\\outside\\model.onnx", "backslash"),
    variant_not_in_files: ("model.onnx", "not listed in the manifest's files"),
    symlinked_model: ("model.onnx", "leads out of the bundle through a symlink"),
    symlinked_folder: ("weights/model.onnx", "leads out of the bundle through a symlink"),
}
REMOTE = [climbing_entry, absolute_entry, backslash_entry, variant_not_in_files]  # object stores have no symlinks


@pytest.fixture
def place(tmp_path, monkeypatch):
    """tmp_path/{x/y/bundle, outside/, archive.parquet, cache/}; the cache is docscore's for this test."""
    monkeypatch.setenv("DOCSCORE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "outside").mkdir()
    pq.write_table(pa.table({"doc_id": [1, 2], "text": ["my invoice is wrong", "the parcel never came"]}),
                   tmp_path / "archive.parquet")
    return tmp_path


def build_attack(tiny_bundle_factory, place: Path, attack) -> tuple[Path, dict]:
    root = place / "x" / "y" / "bundle"
    shutil.copytree(tiny_bundle_factory(), root)
    m = json.loads((root / MANIFEST_NAME).read_text())
    planted = attack(m, root, place / "outside", (root / "model.onnx").read_bytes())
    m[DIGEST_KEY] = manifest_digest(m)  # as an attacker would: the digest is not a signature
    (root / MANIFEST_NAME).write_text(json.dumps(m, indent=2))
    return root, planted


def snapshot(place: Path) -> dict[str, bytes]:
    """Every file under tmp_path that is not the score output: what an attack must not add to or change."""
    return {p.relative_to(place).as_posix(): p.read_bytes() for p in place.rglob("*")
            if p.is_file() and not p.is_symlink() and not p.relative_to(place).as_posix().startswith("out")}


def refused(capsys, args: list[str], entry: str, rule: str) -> None:
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 4, err
    assert len(err.splitlines()) == 1, err
    assert repr(entry) in err and rule in err, err


def assert_cache_empty(place: Path) -> None:
    bundles = place / "cache" / "bundles"
    assert not bundles.exists() or not list(bundles.iterdir()), list(bundles.iterdir())


@pytest.mark.parametrize("attack", list(ATTACKS), ids=lambda a: a.__name__)
def test_a_local_bundle_naming_a_path_outside_itself_is_refused(tiny_bundle_factory, place, attack, capsys):
    root, planted = build_attack(tiny_bundle_factory, place, attack)
    for rel, data in planted.items():  # the model put where the entry leads (outside, or a backslash name)
        (root / rel).write_bytes(data)
    entry, rule = ATTACKS[attack]
    entry = entry or str(place / "outside" / "model.onnx")
    before = snapshot(place)
    refused(capsys, ["score", str(place / "archive.parquet"), "--model", str(root), "--output",
                     str(place / "out"), *FLAGS], entry, rule)
    refused(capsys, ["verify", "--model", str(root)], entry, rule)
    assert snapshot(place) == before
    assert not list((place / "out").rglob("*.parquet"))
    assert_cache_empty(place)


@pytest.mark.parametrize("attack", REMOTE, ids=lambda a: a.__name__)
def test_a_remote_bundle_naming_a_path_outside_itself_is_refused_before_anything_is_written(
        s3, tiny_bundle_factory, place, attack, monkeypatch, capsys):
    root, planted = build_attack(tiny_bundle_factory, place, attack)
    bucket, prefix = s3.bucket(), "models/team/evil"
    uri = s3.upload(root, bucket, prefix)
    for rel, data in planted.items():  # objects where a request for prefix/REL lands (HTTP clients drop dot segments)
        s3.client.put_object(Bucket=bucket, Key=posixpath.normpath(f"{prefix}/{rel}"), Body=data)
    shutil.rmtree(place / "x")  # nothing local left but the archive: the fetch would write what it finds
    entry, rule = ATTACKS[attack]
    entry = entry or str(place / "outside" / "model.onnx")
    before = snapshot(place)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    refused(capsys, ["score", str(place / "archive.parquet"), "--model", uri, "--output", str(place / "out"),
                     *FLAGS], entry, rule)
    refused(capsys, ["verify", "--model", uri], entry, rule)
    assert snapshot(place) == before  # in particular, nothing appeared in tmp_path/outside/
    assert not list((place / "out").rglob("*.parquet"))
    assert_cache_empty(place)


def test_a_remote_bundle_that_fails_its_hash_check_leaves_nothing_in_the_cache(s3, tiny_bundle_factory, place,
                                                                               monkeypatch, capsys):
    bucket = s3.bucket()
    uri = s3.upload(tiny_bundle_factory(), bucket, "models/tampered")
    s3.client.put_object(Bucket=bucket, Key="models/tampered/model.onnx", Body=b"not the model")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    for args in (["score", str(place / "archive.parquet"), "--model", uri, "--output", str(place / "out"), *FLAGS],
                 ["verify", "--model", uri]):
        capsys.readouterr()
        assert main(args) == 4
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "model.onnx: sha256 mismatch" in err and uri in err, err
        assert_cache_empty(place)


def test_a_fetched_bundle_enters_the_cache_whole_verified_and_private(s3, tiny_bundle_factory, place):
    from docscore.bundle import fetch_bundle, load_bundle_uri

    bucket = s3.bucket()
    uri = s3.upload(tiny_bundle_factory(), bucket, "models/bundle")
    local = fetch_bundle(uri, s3.endpoint)
    assert [p.name for p in (place / "cache" / "bundles").iterdir()] == [local.name]  # no temporary left
    assert stat.S_IMODE(os.stat(local).st_mode) == 0o700  # assembled in a private folder (mkdtemp)
    assert load_bundle_uri(uri, s3.endpoint).path == local


def test_another_process_finishing_the_same_copy_first_is_not_an_error(s3, tiny_bundle_factory, place,
                                                                        monkeypatch):
    from docscore import bundle as bundle_mod

    bucket = s3.bucket()
    uri = s3.upload(tiny_bundle_factory(), bucket, "models/bundle")
    replace = os.replace

    def racing(src, dst):  # the other process's copy lands between our removal and our rename
        shutil.copytree(src, dst)
        replace(src, dst)

    monkeypatch.setattr(bundle_mod.os, "replace", racing)
    local = bundle_mod.fetch_bundle(uri, s3.endpoint)
    assert (local / MANIFEST_NAME).is_file()
    assert [p.name for p in (place / "cache" / "bundles").iterdir()] == [local.name]


@pytest.mark.parametrize("rel", ["../model.onnx", "a/../../model.onnx", "/etc/passwd", "C:/model.onnx",
                                 "c:model.onnx", "..\\model.onnx", "sub\\model.onnx", "", ".", "./model.onnx",
                                 "a//model.onnx", "model.onnx/", "model\x00.onnx", 7, None])
def test_only_plain_relative_posix_paths_pass(rel):
    assert path_problem(rel)


@pytest.mark.parametrize("rel", ["model.onnx", "model.onnx.data", "int8/model.int8.bin", "..model", "a..b/c.d"])
def test_plain_relative_paths_pass(rel):
    assert path_problem(rel) is None


def test_verify_help_gives_the_exit_codes_the_code_and_readme_give(capsys):
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(exit 4)" in text and "exit 2" not in text and "(exit 3 on failure)" in text
