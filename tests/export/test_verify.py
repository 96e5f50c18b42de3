"""``verify --checkpoint`` compares the checkpoint's spec with the bundle's, field by field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from docscore.errors import BundleError
from docscore.export import ExportOptions, export_bundle, verify_bundle


def _relabelled(ckpt: Path, tmp_path: Path) -> Path:
    """A copy of a checkpoint whose config names the labels in another order (weights untouched)."""
    dst = tmp_path / "relabelled"
    shutil.copytree(ckpt, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["spec"]["head"]["labels"] = list(reversed(cfg["spec"]["head"]["labels"]))
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("other,field", [
    (dict(arch="bert", pooling="cls"), "pooling: bundle has 'mean', checkpoint has 'cls'"),
    (dict(arch="bert", problem_type="multi_label"), "problem_type: bundle has 'single_label'"),
    (dict(arch="bert", max_length=128), "max_length: bundle has 64, checkpoint has 128"),
    (dict(arch="distilbert"), "input_names: bundle has"),
])
def test_checkpoint_spec_mismatch_names_the_field(tiny_bundle_factory, tiny_checkpoint_factory, other, field):
    with pytest.raises(BundleError, match="does not match bundle") as err:
        verify_bundle(tiny_bundle_factory(), checkpoint=tiny_checkpoint_factory(**other))
    assert field in str(err.value)
    assert err.value.report["checks"]["checkpoint_spec"]["status"] == "failed"
    assert err.value.report["variants"]["fp32"]["checks"]["parity"]["status"] == "skipped"


def test_swapped_labels_in_the_checkpoint_are_named(tiny_bundle_factory, tiny_checkpoint_factory, tmp_path):
    with pytest.raises(BundleError, match="labels: bundle has \\['billing', 'shipping', 'tech'\\], checkpoint has "
                                          "\\['tech', 'shipping', 'billing'\\]"):
        verify_bundle(tiny_bundle_factory(), checkpoint=_relabelled(tiny_checkpoint_factory("bert"), tmp_path))


def test_a_max_length_chosen_at_export_is_not_a_mismatch(tiny_checkpoint_factory, tmp_path):
    ckpt = tiny_checkpoint_factory("bert")
    out = export_bundle(ckpt, ExportOptions(output=tmp_path / "b", max_length=32))
    report = verify_bundle(out, checkpoint=ckpt)
    assert report["passed"] and report["checks"]["checkpoint_spec"]["status"] == "passed"


def test_verify_on_cuda_without_a_gpu_fails_in_one_line_naming_the_build(tiny_bundle_factory, tiny_checkpoint_factory,
                                                                         capsys):
    """``verify --device cuda`` re-judges the ONNX Runtime variants on the GPU; where the CUDA provider cannot
    start it refuses (exit 2), never a silent re-check on the CPU."""
    import onnxruntime as ort

    from docscore.cli import main

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present here")
    rc = main(["verify", "--model", str(tiny_bundle_factory("bert")), "--checkpoint",
               str(tiny_checkpoint_factory("bert")), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--device cuda was requested" in err and "onnxruntime" in err and len(err.splitlines()) == 1


def test_verify_device_cpu_is_the_default_and_rechecks_invariance(tiny_bundle_factory, tiny_checkpoint_factory):
    report = verify_bundle(tiny_bundle_factory("bert"), tiny_checkpoint_factory("bert"), device="cpu")
    fp32 = report["variants"]["fp32"]
    assert report["passed"] and fp32["parity"]["device"] == "cpu" and fp32["invariance"]["passed"]
