"""Bodies whose attention changes with the input length: exported faithfully (verify agrees) or refused by name."""

from __future__ import annotations

import onnx
import pytest

from docscore.bundle import load_bundle
from docscore.errors import ExportError
from docscore.export import ExportOptions, export_bundle, verify_bundle


def test_bigbird_block_sparse_under_its_full_attention_limit_is_exported_and_verify_agrees(
        tiny_checkpoint_factory, tmp_path):
    # max_length 32 <= 36: a freshly loaded BigBird runs full attention on every input the bundle can see.
    ckpt = tiny_checkpoint_factory("big_bird", max_length=32)
    out = export_bundle(ckpt, ExportOptions(output=tmp_path / "b"))
    bundle = load_bundle(out)
    assert bundle.manifest["export"]["body_attention"] == {
        "attention_type": "original_full", "attention_type_configured": "block_sparse", "full_attention_limit": 36}
    assert bundle.variants["fp32"]["parity"]["data"]["max_abs_logit_diff"] < 1e-4
    report = verify_bundle(out, checkpoint=ckpt)  # a fresh load, as a user would, agrees with the gate
    assert report["passed"] and report["variants"]["fp32"]["parity"]["passed"]
    assert report["variants"]["fp32"]["parity"]["data"]["max_abs_logit_diff"] < 1e-4


def test_bigbird_block_sparse_beyond_the_limit_is_refused_by_name(tiny_checkpoint_factory, tmp_path):
    ckpt = tiny_checkpoint_factory("big_bird", max_length=64)
    with pytest.raises(ExportError, match="big_bird with attention_type='block_sparse'.*--max-length 36"):
        export_bundle(ckpt, ExportOptions(output=tmp_path / "b"))
    assert list(tmp_path.iterdir()) == []
    out = export_bundle(ckpt, ExportOptions(output=tmp_path / "b", max_length=36))  # the way out it names
    assert verify_bundle(out, checkpoint=ckpt)["passed"]


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_longformer_is_refused_up_front_by_name(tiny_checkpoint_factory, tmp_path, exporter):
    with pytest.raises(ExportError, match="^longformer bodies cannot be exported"):
        export_bundle(tiny_checkpoint_factory("longformer"), ExportOptions(output=tmp_path / "b", exporter=exporter))
    assert list(tmp_path.iterdir()) == []


def test_the_reference_is_a_fresh_model_not_the_traced_instance(tiny_checkpoint_factory, tmp_path, monkeypatch):
    """Anything tracing does to the model instance must not leak into the PyTorch side of the gate."""
    import torch

    from docscore.export import graph

    real = graph.export_graph

    def export_then_mutate(model, *a, **kw):
        real(model, *a, **kw)
        with torch.no_grad():
            model.head.classifier.bias += 0.5  # the traced instance drifts after the graph is written

    monkeypatch.setattr(graph, "export_graph", export_then_mutate)
    out = export_bundle(tiny_checkpoint_factory("bert"), ExportOptions(output=tmp_path / "b"))
    fp32 = load_bundle(out).variants["fp32"]
    assert fp32["verified"] and fp32["parity"]["data"]["max_abs_logit_diff"] < 1e-4
    onnx.checker.check_model(str(out / "model.onnx"))
