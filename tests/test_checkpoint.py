"""Checkpoint round trip: identical logits offline, safetensors only, clear errors."""

import json

import pytest
import torch

from tinymodels import ARCHITECTURES
from docscore.checkpoint import load_checkpoint, save_checkpoint
from docscore.errors import CheckpointError

TEXTS = ["Where is my refund?", "The app crashes when I open settings on Android after the last update."]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_round_trip_identical_logits(arch, tiny_checkpoint_factory, tmp_path):
    path = tiny_checkpoint_factory(arch)
    model, tok, spec, _ = load_checkpoint(path)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    feed = {k: enc[k] for k in spec.input_names}
    with torch.no_grad():
        first = model(**feed)
    # save again from the loaded model and reload: bit-identical
    save_checkpoint(model, tok, tmp_path / "again", spec)
    model2, _, spec2, _ = load_checkpoint(tmp_path / "again")
    with torch.no_grad():
        second = model2(**feed)
    assert torch.equal(first, second)
    assert spec2 == spec


def test_no_pickle_on_disk_and_config_contents(tiny_checkpoint_factory):
    path = tiny_checkpoint_factory("bert")
    names = {p.name for p in path.iterdir()}
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["spec"]["head"]["labels"] == ["billing", "shipping", "tech"]
    assert cfg["spec"]["max_length"] == 64
    assert cfg["body_config"]["model_type"] == "bert"


def test_refuses_pickles(tiny_checkpoint_factory, tmp_path):
    import shutil

    path = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint_factory("bert"), path)
    (path / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_missing_or_foreign_directory(tmp_path, minilm_dir):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="body"):
        load_checkpoint(minilm_dir)  # a plain HF model folder is a body, not a checkpoint


def test_checkpoint_is_readable_like_any_other_file(tiny_checkpoint_factory):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    path = tiny_checkpoint_factory("distilbert")
    assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((path / "model.safetensors").stat().st_mode) == 0o666 & ~umask
