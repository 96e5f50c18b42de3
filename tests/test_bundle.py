"""The bundle manifest's own digest: an edited docscore.json is refused by every reader; --rehash makes an edit
explicit; an old, unsealed bundle still scores (with a warning) but does not pass verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from docscore.batch import ScoreOptions, Scorer
from docscore.bundle import DIGEST_KEY, MANIFEST_NAME, load_bundle, manifest_digest
from docscore.cli import main
from docscore.errors import BundleError


@pytest.fixture
def bundle_copy(tiny_bundle_factory, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_factory(), dst)
    return dst


def edit(bundle_dir: Path, change) -> None:
    path = bundle_dir / MANIFEST_NAME
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m, indent=2))


def swap_labels(m):
    m["spec"]["head"]["labels"] = list(reversed(m["spec"]["head"]["labels"]))


def test_manifest_carries_its_own_digest(bundle_copy):
    m = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    assert m[DIGEST_KEY] == manifest_digest(m) and len(m[DIGEST_KEY]) == 64
    assert list(m)[-1] == DIGEST_KEY


@pytest.mark.parametrize("change", [swap_labels, lambda m: m["spec"].update(max_length=512)],
                         ids=["labels-swapped", "max_length-edited"])
def test_an_edited_manifest_is_refused_by_verify_and_score(bundle_copy, change, capsys):
    edit(bundle_copy, change)
    with pytest.raises(BundleError, match="docscore.json was edited after export.*verify --model BUNDLE --rehash"):
        load_bundle(bundle_copy)
    table = pa.table({"doc_id": [1], "text": ["my invoice is wrong"]})
    with pytest.raises(BundleError, match="edited after export"):
        Scorer(bundle_copy, ScoreOptions(id_column="doc_id", threads=1))(table)
    assert main(["verify", "--model", str(bundle_copy)]) == 4
    assert "edited after export" in capsys.readouterr().err


def test_rehash_makes_an_edit_explicit(bundle_copy, capsys):
    edit(bundle_copy, lambda m: m["export"].update(note="approved by QA"))
    assert main(["verify", "--model", str(bundle_copy), "--rehash"]) == 0
    assert "manifest resealed" in capsys.readouterr().out
    assert load_bundle(bundle_copy).manifest["export"]["note"] == "approved by QA"
    assert main(["verify", "--model", str(bundle_copy)]) == 0


def test_rehash_does_not_bless_changed_files(bundle_copy):
    edit(bundle_copy, lambda m: m.pop(DIGEST_KEY))
    (bundle_copy / "model.onnx").write_bytes(b"not a model")
    assert main(["verify", "--model", str(bundle_copy), "--rehash"]) == 4
    assert DIGEST_KEY not in json.loads((bundle_copy / MANIFEST_NAME).read_text())


def test_an_unsealed_old_bundle_scores_with_a_warning_but_fails_verify(bundle_copy, caplog, capsys):
    edit(bundle_copy, lambda m: m.pop(DIGEST_KEY))
    with caplog.at_level("WARNING", logger="docscore.bundle"):
        load_bundle(bundle_copy)
    assert f"has no {DIGEST_KEY}" in caplog.text
    assert main(["verify", "--model", str(bundle_copy)]) == 4
    assert "--rehash" in capsys.readouterr().err
    assert main(["verify", "--model", str(bundle_copy), "--rehash"]) == 0
    assert main(["verify", "--model", str(bundle_copy)]) == 0
